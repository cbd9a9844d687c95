import logging
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cntem import hypercolumns as hc
from cntem.dictionary import VisualDictionary
from cntem.features import ExtractionSettings
from cntem.hypercolumns import HypercolumnNet, extract_shard, net_input, prepare_image, sample_coordinates, stored_taps
from cntem.maps import sample_feature_maps
from cntem.vlad import VladEncoder, vlad
from cntem.tta import GROUPS
from cntem.shards import (SHARD_FORMAT, DiskSpaceError, HypercolumnStore, StaleShardError, assemble_hypercolumns,
                          check_disk, format_bytes, shard_bytes, shard_manifest)

from conftest import write_image

SMALL = ExtractionSettings(density=0.1, image_size=32, batch_size=3)


@pytest.fixture
def entries(tmp_path):
    paths = [write_image(tmp_path / f"im{i}.tif", seed=i, size=(40 + 8 * i, 36)) for i in range(4)]
    return [{"id": p.name, "rotation": rot, "path": str(p)} for p in paths for rot in (0, 90)]


def test_sparse_sampling_equals_upsample_then_index():
    torch.manual_seed(0)
    size = 16
    coords = torch.from_numpy(np.stack([sample_coordinates(0, f"im{i}", 0, size, 60) for i in range(2)]))
    for h in (16, 8, 4, 2):  # full resolution and three pooled scales
        fmap = torch.randn(2, 5, h, h).contiguous(memory_format=torch.channels_last)
        naive = F.interpolate(fmap, size=(size, size), mode="bilinear", align_corners=False)
        expected = torch.stack([naive[b, :, coords[b, :, 0].long(), coords[b, :, 1].long()].T for b in range(2)])
        got = sample_feature_maps(fmap, coords, size)
        assert got.shape == (2, 60, 5)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_coordinates_are_distinct_deterministic_and_keyed_by_rotation():
    a = sample_coordinates(7, "CNT-Fiber-0001.tif", 0, 224, 5017)
    assert a.shape == (5017, 2) and len({tuple(r) for r in a}) == 5017
    assert a.min() >= 0 and a.max() < 224
    assert np.array_equal(a, sample_coordinates(7, "CNT-Fiber-0001.tif", 0, 224, 5017))
    assert not np.array_equal(a, sample_coordinates(7, "CNT-Fiber-0001.tif", 90, 224, 5017))
    assert ExtractionSettings().n_pixels == 5017 and ExtractionSettings().n_features == 1472


def test_tap_shapes(weights):
    net = HypercolumnNet(weights, ExtractionSettings().taps, torch.device("cpu"))
    with torch.inference_mode():
        maps, pooled = net(torch.zeros(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]
    assert pooled.shape == (1, 512)
    # 409 sampled pixels at 64 px: maps of 16 x 16 and smaller hold fewer values than their columns.
    settings = ExtractionSettings(image_size=64)
    parts = stored_taps(maps, torch.zeros(1, settings.n_pixels, 2, dtype=torch.int16), settings)
    assert [tuple(p.shape[1:]) for p in parts] == [(409, 64), (409, 128), (16, 16, 256), (8, 8, 512), (4, 4, 512)]
    assert {p.dtype for p in parts} == {torch.float16}


def reference_hypercolumns(maps, coords, size):
    """The hypercolumns of the original sparse sampling: every tap interpolated at the pixels, then float16."""
    return torch.cat([sample_feature_maps(m, coords, size) for m in maps], -1).to(torch.float16).numpy()


def test_hypercolumn_features_follow_the_tap_order_by_value(weights):
    """Features 0-63 are block1_conv2 at the pixel itself, the last 512 block5_conv3 interpolated there."""
    torch.manual_seed(1)
    settings = ExtractionSettings(image_size=32)
    net = HypercolumnNet(weights, settings.taps, torch.device("cpu"))
    image = torch.randint(0, 255, (1, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        maps, _ = net(weights.preprocess.apply(image).contiguous(memory_format=torch.channels_last))
    coords = torch.from_numpy(sample_coordinates(0, "im", 0, 32, settings.n_pixels))[None]
    parts = [p[0].numpy() for p in stored_taps(maps, coords, settings)]
    assert [p.ndim for p in parts] == [2, 2, 3, 3, 3]  # two taps as columns, three as maps
    cols = np.empty((settings.n_pixels, 1472), np.float32)
    assemble_hypercolumns(parts, coords[0].numpy(), 32, cols)
    rows, columns = coords[0, :, 0].long(), coords[0, :, 1].long()
    np.testing.assert_array_equal(cols[:, :64], maps[0][0][:, rows, columns].T.to(torch.float16).float().numpy())
    offsets = [0, 64, 192, 448, 960, 1472]  # 64 + 128 + 256 + 512 + 512 channels
    for tap, fmap in enumerate(maps):
        upsampled = F.interpolate(fmap.float(), size=(32, 32), mode="bilinear", align_corners=False)[0][:, rows, columns].T
        scale = upsampled.abs().max().item()
        np.testing.assert_allclose(cols[:, offsets[tap]:offsets[tap + 1]], upsampled.numpy(), rtol=2e-3, atol=1e-3 * scale)


def test_compact_shards_hold_the_papers_hypercolumns_in_under_a_third_of_the_bytes(tmp_path, weights):
    """At 224 px and 10% density an entry takes <= 4.6 MB (14.8 MB as columns), and reads back the
    original sparse sampling's hypercolumns to float16 round-off."""
    paper = ExtractionSettings(batch_size=2)
    paths = [write_image(tmp_path / f"im{i}.tif", seed=i, size=(300 + 40 * i, 260)) for i in range(3)]
    entries = [{"id": p.name, "rotation": 0, "path": str(p)} for p in paths]
    shard = tmp_path / "shard.h5"
    extract_shard(entries, shard, weights, paper, torch.device("cpu"), workers=0, progress=False)
    per_entry = shard.stat().st_size / len(entries)
    assert per_entry <= 4.6e6 and abs(per_entry - shard_bytes(1, 1, paper)) < 0.01 * per_entry
    assert paper.n_pixels * paper.n_features * 2 / per_entry > 3.2
    net = HypercolumnNet(weights, paper.taps, torch.device("cpu"))
    with HypercolumnStore([shard]) as store:
        for e in entries:
            image = torch.from_numpy(prepare_image(hc.read_grey(e["path"]), paper).copy())[None]
            coords = torch.from_numpy(sample_coordinates(0, e["id"], 0, 224, paper.n_pixels))[None]
            with torch.inference_mode(), hc.autocast_for(torch.device("cpu")):
                maps, _ = net(net_input(image, weights, torch.device("cpu")))
            expected = reference_hypercolumns(maps, coords, 224)[0].astype(np.float32)
            got = store.hypercolumns(e["id"], 0).astype(np.float32)
            # float16 keeps 11 significant bits: two roundings (the stored map, the result) stay within 2^-10.
            scale = np.abs(expected).max(0, keepdims=True)
            assert np.all(np.abs(got - expected) <= 2 ** -10 * (np.abs(expected) + scale) + 1e-6)
            picked = np.array([4, 17, 4000])
            part = np.empty((3, paper.n_features), np.float16)
            store.read_hypercolumns_into(store.entry_views([(e["id"], 0)])[0][0], part, rows=picked)
            np.testing.assert_array_equal(part.astype(np.float32), got[picked])
        # VLAD straight from the stored maps, as every encoding job computes it, against VLAD of the
        # assembled hypercolumns: the same distances, so (up to float32 near-ties) the same vectors.
        dense = np.stack([store.hypercolumns(e["id"], 0).astype(np.float32) for e in entries])
        dictionary = VisualDictionary(8, device="cpu")
        dictionary.centroids_ = dense[0, :4800:600].copy()
        ids = [(e["id"], 0) for e in entries]
        got = VladEncoder(dictionary, batch_size=2).transform_store(store, ids)
        expected = vlad(torch.from_numpy(dense), torch.from_numpy(dictionary.centroids_)).numpy()
        assert got.shape == expected.shape == (3, 8 * 1472)
        assert np.all(np.sum(got * expected, 1) > 0.9999)


@pytest.mark.parametrize("version", [None, "cntem-shard-2"])  # the first format had no attribute
def test_shards_of_an_older_format_are_refused_with_the_fix(tmp_path, version):
    old = tmp_path / "shard-000.h5"
    with h5py.File(old, "w") as h5:
        h5.create_dataset("hcol", data=np.zeros((1, 4, 8), np.float16))
        if version:  # version 2: the layout of today's shards without the pooled hypercolumns
            h5.attrs["format"] = version
    with pytest.raises(StaleShardError, match=r"older format.*rm .*shard-\*\.h5.*extract them again"):
        HypercolumnStore([old])


def test_pooled_hypercolumns_are_the_mean_then_the_max_of_every_whole_map(entries, weights, tmp_path):
    """Each shard entry's pooled hypercolumn is, tap by tap, the mean of its map over all positions, then
    tap by tap the max: recomputed here from the network's maps in float64."""
    shard = tmp_path / "shard.h5"
    extract_shard(entries, shard, weights, SMALL, torch.device("cpu"), workers=0, progress=False)
    net = HypercolumnNet(weights, SMALL.taps, torch.device("cpu"))
    images = torch.stack([torch.from_numpy(prepare_image(hc.read_grey(e["path"]), SMALL, e["rotation"]).copy())
                          for e in entries])
    expected = []
    for start in range(0, len(entries), SMALL.batch_size):  # the extraction's batches: the very same maps
        with torch.inference_mode(), hc.autocast_for(torch.device("cpu")):
            maps, _ = net(net_input(images[start:start + SMALL.batch_size], weights, torch.device("cpu")))
        maps = [m.float().numpy().astype(np.float64) for m in maps]
        expected.append(np.concatenate([m.mean((2, 3)) for m in maps] + [m.max((2, 3)) for m in maps], 1))
    expected = np.concatenate(expected)
    with HypercolumnStore([shard]) as store:
        got = store.pooled_hypercolumns([(e["id"], e["rotation"]) for e in entries])
        top = store.pooled([(e["id"], e["rotation"]) for e in entries])
    assert got.shape == (8, 2 * 1472) and got.dtype == np.float32
    assert top.shape == (8, 512) and not np.allclose(top, got[:, 960:1472])  # the baseline's, stored apart
    np.testing.assert_allclose(got[:, :1472], expected[:, :1472], rtol=1e-5, atol=1e-7)  # means, in float32
    np.testing.assert_array_equal(got[:, 1472:], expected[:, 1472:])  # maxima: values of the maps themselves
    assert (got[:, 1472:] >= got[:, :1472]).all() and (got >= 0).all()  # after the ReLU
    assert not np.array_equal(got[0], got[1])  # a rotated copy is another entry


def test_rotation_is_applied_to_the_network_input():
    grey = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    squash, crop = ExtractionSettings(image_size=8), ExtractionSettings(image_size=8, input_mode="center_crop")
    base = prepare_image(grey, squash, 0)
    assert base.shape == (8, 8)
    assert np.array_equal(prepare_image(grey, squash, 90), np.rot90(base))
    assert np.array_equal(prepare_image(grey, squash, 270), np.rot90(base, 3))
    crop = prepare_image(grey, crop, 0)
    assert crop.shape == (8, 8) and not np.array_equal(crop, base)
    # the mirrored orientations (d8 averaging): left-right mirror first, then the rotation
    assert np.array_equal(prepare_image(grey, squash, 360), base[:, ::-1])
    assert np.array_equal(prepare_image(grey, squash, 450), np.rot90(base[:, ::-1]))
    eight = [prepare_image(grey, squash, o).tobytes() for o in GROUPS["d8"]]
    assert len(set(eight)) == 8  # an asymmetric image: eight distinct network inputs
    with pytest.raises(ValueError, match="orientation 45"):
        prepare_image(grey, squash, 45)


def test_shard_contents_attributes_and_determinism(entries, weights, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    extract_shard(entries, a, weights, SMALL, torch.device("cpu"), workers=0, progress=False)
    extract_shard(entries, b, weights, SMALL, torch.device("cpu"), workers=1, progress=False)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert fa.attrs["format"] == SHARD_FORMAT
        assert list(fa["taps"]) == sorted(SMALL.taps)
        assert fa["taps/block1_conv2"].shape == (8, SMALL.n_pixels, 64)  # 102 sampled pixels of 32 x 32
        assert fa["taps/block4_conv3"].shape == (8, 4, 4, 512) and fa["taps/block4_conv3"].chunks == (1, 4, 4, 512)
        for tap in SMALL.taps:
            values = fa[f"taps/{tap}"][()]
            assert values.dtype == np.float16 and np.isfinite(values).all() and values.any()
            assert values.tobytes() == fb[f"taps/{tap}"][()].tobytes()  # same seed -> same bytes
        assert fa["pooled_hypercolumns"].shape == (8, 2 * 1472) and fa["pooled"].shape == (8, 512)
        assert fa["pooled_hypercolumns"][()].tobytes() == fb["pooled_hypercolumns"][()].tobytes()
        assert list(fa["rotations"][()]) == [0, 90] * 4
        assert fa.attrs["weights_sha256"] == weights.sha256 and fa.attrs["density"] == 0.1
        assert fa.attrs["weights_random"] == weights.is_random
    with HypercolumnStore([a]) as store:
        x0, x90 = store.hypercolumns("im0.tif", 0), store.hypercolumns("im0.tif", 90)
        assert x0.shape == (SMALL.n_pixels, 1472) and not np.array_equal(x0, x90)
        assert np.array_equal(store.coords("im0.tif", 90), sample_coordinates(0, "im0.tif", 90, 32, SMALL.n_pixels)[None])
        with pytest.raises(KeyError, match="rerun the extraction"):
            store.hypercolumns("im0.tif", 180)


def test_interrupted_extraction_leaves_no_shard(entries, weights, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(hc.ShardCursor, "write", crash)
    out = tmp_path / "shard-000.h5"
    with pytest.raises(RuntimeError, match="killed"):
        extract_shard(entries, out, weights, SMALL, torch.device("cpu"), workers=0, progress=False)
    assert not out.exists()


def test_the_automatic_shard_count_follows_the_views():
    # One network load for a small dataset; ~512 views a shard at scale.
    images = [{"id": f"im{i}.tif", "path": f"/data/im{i}.tif", "width": 300, "height": 200} for i in range(300)]
    plan = [{"id": r["id"], "class": "Cl" if i % 2 else "Fi", "rotation": rot}
            for i, r in enumerate(images) for rot in ((0, 90) if i % 2 else (0,))]
    rows = shard_manifest(images, [plan], "auto", ExtractionSettings())  # 150 x 4 + 150 x 1 = 750 entries
    assert len(rows) == 750 and {r["shard"] for r in rows} == {0, 1} and {r["views"] for r in rows} == {1}
    # Tiles of 224 px at native resolution: 300 x 200 px is enlarged to 336 x 224, two views -> 3 shards.
    rows = shard_manifest(images, [plan], "auto", ExtractionSettings(input_mode="tiles"))
    assert {r["views"] for r in rows} == {2} and {r["shard"] for r in rows} == {0, 1, 2}
    assert shard_manifest(images, [plan], 5, ExtractionSettings())[-1]["shard"] == 4


def test_disk_check_stops_before_extraction(tmp_path, monkeypatch, caplog):
    with pytest.raises(OSError, match="not enough disk"):
        check_disk(tmp_path, 10**18)
    # Small stores in useful units, not "need 0.0 GB, 0.0 GB free"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4500, 4500))
    with caplog.at_level(logging.INFO), pytest.raises(DiskSpaceError) as short:
        check_disk(tmp_path, 12_300)
    assert f"hypercolumns need 12.3 kB on disk (4.5 kB free in {tmp_path})" in caplog.text
    assert str(short.value).startswith(f"not enough disk for the hypercolumn shards in {tmp_path}: need 12.3 kB, "
                                       "4.5 kB free. Free 8.41 kB or more")
    assert [format_bytes(n) for n in (0, 999, 45_600_000, 3.2e9, 7.5e12)] == ["0 B", "999 B", "45.6 MB", "3.2 GB",
                                                                            "7.5 TB"]


def test_a_full_disk_during_a_shard_write_is_one_message_and_leaves_no_partial_file(entries, weights, tmp_path,
                                                                                     monkeypatch):
    def disk_full(*args, **kwargs):  # as h5py reports it: errno in the text only
        raise OSError("Can't synchronously write data (file write failed: errno = 28, error message = "
                      "'No space left on device')")

    monkeypatch.setattr(hc.ShardCursor, "write", disk_full)
    out = tmp_path / "store" / "shard-000.h5"
    out.parent.mkdir()
    with pytest.raises(DiskSpaceError) as full:
        extract_shard(entries, out, weights, SMALL, torch.device("cpu"), workers=0, progress=False)
    assert str(full.value).startswith(f"{out}: the disk filled up while writing it (")
    assert "the partial file was removed. The file system of /" in str(full.value)
    assert "free space there" in str(full.value) and "run the same command again; finished shards are kept" in str(full.value)
    assert list(out.parent.iterdir()) == []  # neither the shard nor its .part


def test_a_full_disk_in_any_rule_is_one_message_in_its_log(tmp_path, monkeypatch):
    import errno
    import sys

    from cntem import rule_log

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    rule_log(tmp_path / "rule.log")
    sys.excepthook(OSError, OSError(errno.ENOSPC, "No space left on device"), None)
    logged = (tmp_path / "rule.log").read_text()
    assert "the disk is full ([Errno 28] No space left on device): free space on the file system of results/, then " \
           "run the same command again; finished jobs are kept" in logged
    assert "unexpected error" not in logged


def test_the_network_input_is_a_writable_array():
    """torch warns ("not writable") about a tensor made from a read-only array, as PIL's are."""
    grey = np.zeros((40, 50), np.uint8)
    assert all(prepare_image(grey, SMALL, rotation).flags.writeable for rotation in (0, 90))
