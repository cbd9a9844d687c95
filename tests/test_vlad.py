from types import SimpleNamespace

import numpy as np
import torch

from cntem.dictionary import VisualDictionary, fit_kmeans, sample_vectors
from cntem.encoded import load_encoded, write_encoded
from cntem.vlad import VladEncoder, vlad


def test_hand_computed_vlad():
    # Two centroids in 2-D; three descriptors go to c0 = (0, 0), one to c1 = (10, 0).
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [12.0, 1.0]]])
    v = vlad(x, c)
    # residual sums: c0 -> (2, 3), c1 -> (2, 1); intra-normalised, then the whole vector / sqrt(2)
    r0 = np.array([2, 3]) / np.sqrt(13)
    r1 = np.array([2, 1]) / np.sqrt(5)
    expected = np.concatenate([r0, r1]) / np.sqrt(2)
    np.testing.assert_allclose(v.numpy()[0], expected, rtol=1e-6)
    assert abs(float(v.norm()) - 1) < 1e-6


def test_empty_cluster_stays_zero_and_power_norm():
    c = torch.tensor([[0.0, 0.0], [100.0, 100.0], [-5.0, 0.0]])
    x = torch.tensor([[[1.0, 0.0], [4.0, 0.0]]])  # both nearest to c0
    v = vlad(x, c).numpy()[0].reshape(3, 2)
    np.testing.assert_allclose(v[0], [1.0, 0.0], atol=1e-6)
    assert not v[1].any() and not v[2].any()
    p = vlad(torch.tensor([[[4.0, 1.0], [0.0, 0.0]]]), torch.tensor([[0.0, 0.0]]), power_norm=True)
    np.testing.assert_allclose(p.numpy()[0], np.array([2.0, 1.0]) / np.sqrt(5), rtol=1e-6)


def test_batch_equals_one_by_one():
    torch.manual_seed(0)
    c, x = torch.randn(5, 8), torch.randn(3, 40, 8)
    together = vlad(x, c)
    for i in range(3):
        torch.testing.assert_close(together[i], vlad(x[i:i + 1], c)[0])


class FakeStore:
    """Entries of dense hypercolumns, stored as one tap of columns (as a shard stores its shallow taps)."""

    def __init__(self, data):
        self.data = data
        pixels = self.view_shape[0]
        self.settings = SimpleNamespace(n_pixels=pixels, image_size=int(np.ceil(np.sqrt(pixels))))
        self.tap_shapes = [self.view_shape]

    @property
    def view_shape(self):
        return next(iter(self.data.values())).shape

    def entry_views(self, entries):
        return [[entry] for entry in entries]  # one view an entry, located by its key

    def read_hypercolumns_into(self, view, out, rows=None):
        values = self.data[view]
        out[...] = values if rows is None else values[rows]

    def read_taps_into(self, view, taps_out, coords_out):
        taps_out[0][...] = self.data[view]
        coords_out[...] = 0


def test_kmeans_pca_encode_and_storage(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, (4, 6)).astype(np.float32)
    data = {(f"im{i}", 0): (centers[rng.integers(4, size=50)] + rng.normal(0, 0.1, (50, 6))).astype(np.float16)
            for i in range(6)}
    store = FakeStore(data)
    sample = sample_vectors(store, list(data), 200, seed=1)
    assert sample.shape == (200, 6) and sample.dtype == np.float32
    centroids, objective = fit_kmeans(sample, 4, niter=20, seed=1, max_points_per_centroid=256, use_gpu=False, nredo=5)
    # every true centre is recovered by some centroid
    assert np.max(np.min(np.linalg.norm(centers[:, None] - centroids[None], axis=-1), axis=1)) < 0.5
    again, _ = fit_kmeans(sample, 4, niter=20, seed=1, max_points_per_centroid=256, use_gpu=False, nredo=5)
    assert np.array_equal(centroids, again)  # seeded: identical run to run
    whitened = VisualDictionary(4, niter=20, seed=1, pca_dim=3, pca_whiten=True, device="cpu").fit_vectors(sample)
    np.testing.assert_allclose(whitened.project(sample).std(0), 1.0, rtol=0.05)
    d = VisualDictionary(4, sample_size=200, niter=20, nredo=5, seed=1, device="cpu").fit(store, list(data)[:2])
    assert d.fit_ids_ == ["im0", "im1"] and d.centroids_.shape == (4, 6)
    d.centroids_ = centroids
    d.save(tmp_path / "d.h5")
    loaded = VisualDictionary.load(tmp_path / "d.h5")
    assert np.array_equal(loaded.centroids_, centroids) and loaded.fit_ids_ == ["im0", "im1"]
    assert (loaded.k, loaded.nredo, loaded.pca_dim) == (4, 5, None)
    x = VladEncoder(loaded, batch_size=4).transform_store(store, list(data))
    assert x.shape == (6, 24)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # Reused batch buffers (6 entries in batches of 4) give each entry its own encoding.
    one_by_one = [vlad(torch.from_numpy(h).float()[None], torch.from_numpy(centroids))[0].numpy() for h in data.values()]
    np.testing.assert_allclose(x, np.stack(one_by_one), atol=1e-6)
    # With a PCA, descriptors are centred and projected before assignment.
    whitened.save(tmp_path / "w.h5")
    with_pca = VisualDictionary.load(tmp_path / "w.h5")
    x_pca = VladEncoder(with_pca, batch_size=4).transform_store(store, list(data))
    h = torch.from_numpy(data[("im5", 0)]).float()
    mean, rows = torch.from_numpy(with_pca.pca_mean_), torch.from_numpy(with_pca.pca_components_)
    expected = vlad(((h - mean) @ rows.T)[None], torch.from_numpy(with_pca.centroids_))
    np.testing.assert_allclose(x_pca[5], expected[0].numpy(), atol=1e-4)  # float32: x R^T - m R^T vs (x - m) R^T
    rows = [{"id": i, "rotation": 0, "class": "ab"[n % 2]} for n, (i, _) in enumerate(data)]
    write_encoded(tmp_path / "v.h5", VladEncoder(loaded, batch_size=4), store, {"train": rows[:4], "val": rows[4:]})
    splits, meta = load_encoded(tmp_path / "v.h5")
    assert np.array_equal(np.concatenate([splits["train"]["X"], splits["val"]["X"]]), x)
    assert splits["train"]["y"] == ["a", "b"] * 2 and splits["val"]["ids"] == ["im4", "im5"] and meta["k"] == 4


class CountingStore(FakeStore):
    def __init__(self, data):
        super().__init__(data)
        self.read = []

    def read_hypercolumns_into(self, view, out, rows=None):
        self.read.append(view[0])
        super().read_hypercolumns_into(view, out, rows)


def test_the_dictionary_sample_reads_only_the_entries_it_needs():
    """400 entries of 100 pixels, 1,000 vectors wanted: 40 entries give a quarter of their pixels each."""
    rng = np.random.default_rng(0)
    # Column 0 says which entry a vector came from (exact in float16), the others are noise.
    data = {(f"im{i:03d}", 0): np.column_stack([np.full(100, i), rng.random((100, 2))]).astype(np.float16)
            for i in range(400)}
    store = CountingStore(data)
    sample = sample_vectors(store, list(data), 1000, seed=3)
    assert sample.shape == (1000, 3) and len(store.read) == len(set(store.read)) == 40
    read = {int(image_id[2:]) for image_id in store.read}
    assert set(sample[:, 0].astype(int)) == read  # every vector is one of the read entries'
    assert np.bincount(sample[:, 0].astype(int))[sorted(read)].tolist() == [25] * 40
    again = CountingStore(data)
    np.testing.assert_array_equal(sample_vectors(again, list(data), 1000, seed=3), sample)
    # A K-means that uses 200 of the 1,000 vectors gets them from the same 40 entries, 5 each.
    fewer = CountingStore(data)
    kept = sample_vectors(fewer, list(data), 1000, seed=3, keep=200)
    assert kept.shape == (200, 3) and fewer.read == store.read
    assert np.bincount(kept[:, 0].astype(int))[sorted(read)].tolist() == [5] * 40


def test_the_dictionary_assembles_only_the_vectors_kmeans_uses():
    """Without a PCA, FAISS trains on at most K x max_points_per_centroid vectors; a PCA uses the whole sample."""
    assert VisualDictionary(50, sample_size=200000, max_points_per_centroid=256).vectors_used() == 12800
    assert VisualDictionary(50, sample_size=5000, max_points_per_centroid=256).vectors_used() == 5000
    assert VisualDictionary(50, sample_size=200000, pca_dim=64).vectors_used() == 200000
    rng = np.random.default_rng(1)
    data = {(f"im{i:02d}", 0): rng.normal(size=(100, 4)).astype(np.float16) for i in range(40)}
    dictionary = VisualDictionary(3, sample_size=2000, max_points_per_centroid=50, niter=5, device="cpu")
    dictionary.fit(FakeStore(data), list(data))
    assert dictionary.n_vectors_ == 150


def stored_batch(rng, b=3, size=32, pixels=60):
    """Random stored taps of `b` entries: one tap of columns and two maps (16 x 16 and 4 x 4), with the
    hypercolumns a shard reader assembles from them."""
    from cntem.hypercolumns import sample_coordinates
    from cntem.shards import assemble_hypercolumns

    coords = np.stack([sample_coordinates(0, f"im{i}", 0, size, pixels) for i in range(b)])
    taps = [rng.normal(size=(b, pixels, 3)), rng.normal(size=(b, 16, 16, 5)), rng.normal(size=(b, 4, 4, 2))]
    taps = [t.astype(np.float32) for t in taps]
    dense = np.empty((b, pixels, 10), np.float32)
    for i in range(b):
        assemble_hypercolumns([t[i] for t in taps], coords[i], size, dense[i])
    return [torch.from_numpy(t) for t in taps], coords, torch.from_numpy(dense)


def test_stored_taps_act_as_their_assembled_hypercolumns():
    """Products with a matrix and sums over pixel groups, computed on the maps, equal the assembled columns'."""
    from cntem.maps import StoredTaps

    rng = np.random.default_rng(5)
    taps, coords, dense = stored_batch(rng)
    stored = StoredTaps(taps, coords, 32)
    matrix = torch.from_numpy(rng.normal(size=(10, 7)).astype(np.float32))
    torch.testing.assert_close(stored.at_pixels(stored.split(matrix)), dense @ matrix, atol=1e-4, rtol=1e-4)
    groups = torch.from_numpy(rng.integers(0, 4, size=dense.shape[:2]))
    expected = torch.stack([torch.stack([dense[b][groups[b] == g].sum(0) for g in range(4)]) for b in range(3)])
    torch.testing.assert_close(stored.sum_over(groups, 4), expected, atol=1e-4, rtol=1e-4)


def test_vlad_from_stored_taps_equals_vlad_of_the_hypercolumns():
    """Full width and with a whitened PCA: the encoder on maps gives the VLAD of the assembled hypercolumns."""
    from cntem.maps import StoredTaps

    rng = np.random.default_rng(6)
    taps, coords, dense = stored_batch(rng)
    sample = dense.reshape(-1, 10).numpy()
    for pca_dim in (None, 4):
        dictionary = VisualDictionary(6, niter=10, seed=1, pca_dim=pca_dim, pca_whiten=True, device="cpu")
        dictionary.fit_vectors(sample)
        got = VladEncoder(dictionary, power_norm=True).transform_taps(StoredTaps(taps, coords, 32))
        x = torch.from_numpy(dictionary.project(dense.numpy()).astype(np.float32))
        expected = vlad(x, torch.from_numpy(dictionary.centroids_), power_norm=True)
        assert got.shape == (3, 6 * (pca_dim or 10))
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_faiss_warnings_go_to_the_log_not_only_the_terminal(caplog, capfd):
    """K-means on fewer than 39 vectors a centroid: FAISS's C++ warning becomes a logged warning (the rule's log)."""
    import logging

    x = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="cntem.dictionary"):
        fit_kmeans(x, 8, niter=5, seed=1, max_points_per_centroid=256, use_gpu=False)
    assert "faiss: WARNING clustering 100 points to 8 centroids: please provide at least 312 training points" \
        in caplog.text
    assert "WARNING clustering" not in capfd.readouterr().err
