import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cntem import hypercolumns as hc
from cntem.features import ExtractionSettings
from cntem.hypercolumns import (HypercolumnNet, extract_shard, hypercolumns_at, prepare_image,
                                sample_coordinates, sample_feature_maps)
from cntem.shards import HypercolumnStore, assign_shard, check_disk

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
    cols = hypercolumns_at(maps, torch.zeros(1, 10, 2, dtype=torch.int16), 64)
    assert cols.shape == (1, 10, 1472) and cols.dtype == torch.float16


def test_hypercolumn_features_follow_the_tap_order_by_value(weights):
    """Features 0-63 are block1_conv2 at the pixel itself, the last 512 block5_conv3 interpolated there."""
    torch.manual_seed(1)
    net = HypercolumnNet(weights, ExtractionSettings().taps, torch.device("cpu"))
    image = torch.randint(0, 255, (1, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        maps, _ = net(weights.preprocess.apply(image).contiguous(memory_format=torch.channels_last))
    coords = torch.from_numpy(sample_coordinates(0, "im", 0, 32, 50))[None]
    cols = hypercolumns_at(maps, coords, 32, dtype=torch.float32)[0]
    rows, columns = coords[0, :, 0].long(), coords[0, :, 1].long()
    torch.testing.assert_close(cols[:, :64], maps[0][0][:, rows, columns].T)
    offsets = [0, 64, 192, 448, 960, 1472]  # 64 + 128 + 256 + 512 + 512 channels
    for tap, fmap in enumerate(maps):
        upsampled = F.interpolate(fmap, size=(32, 32), mode="bilinear", align_corners=False)[0][:, rows, columns].T
        torch.testing.assert_close(cols[:, offsets[tap]:offsets[tap + 1]], upsampled, rtol=1e-4, atol=1e-4)


def test_rotation_is_applied_to_the_network_input():
    grey = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    base = prepare_image(grey, 8, "squash", 0)
    assert base.shape == (8, 8)
    assert np.array_equal(prepare_image(grey, 8, "squash", 90), np.rot90(base))
    assert np.array_equal(prepare_image(grey, 8, "squash", 270), np.rot90(base, 3))
    crop = prepare_image(grey, 8, "center_crop", 0)
    assert crop.shape == (8, 8) and not np.array_equal(crop, base)


def test_shard_contents_attributes_and_determinism(entries, weights, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    extract_shard(entries, a, weights, SMALL, torch.device("cpu"), workers=0, progress=False)
    extract_shard(entries, b, weights, SMALL, torch.device("cpu"), workers=1, progress=False)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert fa["hcol"].shape == (8, SMALL.n_pixels, 1472) and fa["hcol"].dtype == np.float16
        assert fa["hcol"].chunks == (1, SMALL.n_pixels, 1472)
        assert fa["hcol"][()].tobytes() == fb["hcol"][()].tobytes()  # same seed -> same bytes
        assert np.isfinite(fa["hcol"][()].astype(np.float32)).all() and fa["hcol"][()].any()
        assert list(fa["rotations"][()]) == [0, 90] * 4
        assert fa.attrs["weights_sha256"] == weights.sha256 and fa.attrs["density"] == 0.1
        assert fa.attrs["weights_random"] == weights.is_random
    with HypercolumnStore([a]) as store:
        x0, x90 = store.hypercolumns("im0.tif", 0), store.hypercolumns("im0.tif", 90)
        assert x0.shape == (SMALL.n_pixels, 1472) and not np.array_equal(x0, x90)
        assert np.array_equal(store.coords("im0.tif", 90), sample_coordinates(0, "im0.tif", 90, 32, SMALL.n_pixels))
        with pytest.raises(KeyError, match="rerun the extraction"):
            store.hypercolumns("im0.tif", 180)


def test_interrupted_extraction_leaves_no_shard(entries, weights, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(hc, "_write_batch", crash)
    out = tmp_path / "shard-000.h5"
    with pytest.raises(RuntimeError, match="killed"):
        extract_shard(entries, out, weights, SMALL, torch.device("cpu"), workers=0, progress=False)
    assert not out.exists()


def test_shard_assignment_is_pinned_and_spreads_similar_ids():
    # Pinned: a change of the hash would move every image and re-extract every user's shards.
    assert [assign_shard(i, 16) for i in ("CNT-Fiber-0001.tif", "Cl/img0.tif", "NonCNT-1195.tif")] == [1, 3, 0]
    # Ids that differ in one digit (the NIOSH names) spread over every shard, none crowded (a CRC would).
    counts = np.bincount([assign_shard(f"CNT-Fiber-{i:04d}.tif", 16) for i in range(1600)], minlength=16)
    assert counts.min() >= 70 and counts.max() <= 130


def test_disk_check_stops_before_extraction(tmp_path):
    with pytest.raises(OSError, match="not enough disk"):
        check_disk(tmp_path, 10**18)
