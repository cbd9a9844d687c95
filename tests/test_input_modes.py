"""Input modes beyond the paper's squash: the whole micrograph as views, through the network one by one (tiles)
or at once (native), stored as consecutive rows of one entry and encoded as one image."""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cntem import hypercolumns as hc
from cntem.dictionary import VisualDictionary
from cntem.features import ExtractionSettings, view_grid, view_offsets
from cntem.hypercolumns import HypercolumnNet, extract_shard, net_input, prepare_image
from cntem.io import read_table
from cntem.model import Model
from cntem.runs import Method
from cntem.shards import HypercolumnStore
from cntem.vlad import VladEncoder, vlad

from conftest import write_image
from test_hypercolumns import reference_hypercolumns

CPU = torch.device("cpu")
# 32-px views of micrographs capped at 96 px: a 100 x 70 image is read at 96 x 64, as 3 x 2 views.
TILES = ExtractionSettings(image_size=32, max_side=96, input_mode="tiles", batch_size=4)
NATIVE = replace(TILES, input_mode="native")
SQUASH = replace(TILES, input_mode="squash")


def test_views_cover_the_micrograph_at_its_own_resolution():
    tiles = ExtractionSettings(input_mode="tiles")  # 224-px views, longer side capped at 1,024 px
    assert tiles.scaled_size(2048, 1536) == (1024, 768)  # halved
    assert tiles.scaled_size(600, 500) == (608, 496)  # its own pixels, sides rounded to VGG16's stride
    assert tiles.scaled_size(300, 100) == (672, 224)  # a shorter side below one view is enlarged to it
    for length in (224, 240, 496, 608, 768, 1024):
        starts = view_offsets(length, 224)
        covered = np.zeros(length, bool)
        for start in starts:
            covered[start:start + 224] = True
        assert covered.all() and starts[0] == 0 and starts[-1] == length - 224
        assert all(start % 16 == 0 for start in starts) and len(starts) <= -(-length // 224) + 1
    assert len(tiles.view_origins(2048, 2048)) == 25 and len(tiles.view_origins(2048, 1536)) == 20
    assert ExtractionSettings().view_origins(2048, 2048) == [(0, 0)]  # squash: one view


def test_native_and_tiles_read_the_thin_walls_squash_blurs_away():
    """A 1-px wall on a 1,024-px frame keeps its full contrast at native resolution; squashed 4.6x, it fades."""
    grey = np.zeros((1024, 1024), np.uint8)
    grey[:, 500] = 255
    squash = prepare_image(grey, ExtractionSettings())
    native = prepare_image(grey, ExtractionSettings(input_mode="native"))
    assert squash.shape == (224, 224) and squash.max() < 100
    assert native.shape == (1024, 1024) and native.max() == 255
    assert native.size > 20 * squash.size  # the network reads 21x more pixels


@pytest.fixture
def micrographs(tmp_path):
    sizes = [(100, 70), (60, 40), (130, 90)]
    paths = [write_image(tmp_path / f"im{i}.tif", seed=i, size=size) for i, size in enumerate(sizes)]
    return [{"id": p.name, "rotation": rot, "path": str(p)} for p in paths for rot in (0, 90)]


def extract(micrographs, settings, weights, tmp_path):
    shard = tmp_path / f"{settings.input_mode}.h5"
    extract_shard(micrographs, shard, weights, settings, CPU, workers=0, progress=False)
    return HypercolumnStore([shard])


def network_maps(net, weights, images):
    with torch.inference_mode(), hc.autocast_for(CPU):
        maps, _ = net(net_input(images, weights, CPU))
    return maps


def close_in_float16(got, expected):
    """Within bfloat16 network arithmetic and float16 storage of each other, relative to each feature's scale."""
    got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
    scale = np.abs(expected).max(0, keepdims=True) + 1e-6
    return np.abs(got - expected).max() <= 0.02 * scale.max() and np.median(np.abs(got - expected) / scale) < 2e-3


def test_tiles_are_views_of_the_micrograph_each_through_the_network(micrographs, weights, tmp_path):
    net = HypercolumnNet(weights, TILES.taps, CPU)
    with extract(micrographs, TILES, weights, tmp_path) as store:
        for e in micrographs:
            image = prepare_image(hc.read_grey(e["path"]), TILES, e["rotation"])
            origins = view_grid(*image.shape, 32)
            assert len(store.entry_views([(e["id"], e["rotation"])])[0]) == len(origins) > 1
            crops = torch.stack([torch.from_numpy(image[t:t + 32, left:left + 32].copy()) for t, left in origins])
            maps = network_maps(net, weights, crops)
            coords = torch.from_numpy(store.coords(e["id"], e["rotation"]).astype(np.int64))
            expected = reference_hypercolumns(maps, coords, 32).reshape(-1, TILES.n_features)
            assert close_in_float16(store.hypercolumns(e["id"], e["rotation"]).astype(np.float32), expected)
            # Pooled over every view: the mean of the maps' means, the max of their maxima.
            maps = [m.float().numpy() for m in maps]
            pooled = np.concatenate([np.mean([m.mean((1, 2)) for m in fmap], 0) for fmap in maps]
                                    + [np.max([m.max((1, 2)) for m in fmap], 0) for fmap in maps])
            np.testing.assert_allclose(store.pooled_hypercolumns([(e["id"], e["rotation"])])[0], pooled,
                                       rtol=1e-4, atol=1e-6)
        # 100 x 70 -> 96 x 64: 3 x 2 views; rotated, 2 x 3; 60 x 40 is enlarged to 48 x 32: 2 x 1.
        assert [len(v) for v in store.entry_views([("im0.tif", 0), ("im0.tif", 90), ("im1.tif", 0)])] == [6, 6, 2]


def test_native_cuts_the_whole_micrographs_maps_into_the_views(micrographs, weights, tmp_path):
    net = HypercolumnNet(weights, NATIVE.taps, CPU)
    with extract(micrographs, NATIVE, weights, tmp_path) as native, \
            extract(micrographs, TILES, weights, tmp_path) as tiles:
        e = micrographs[4]  # 130 x 90 read at 96 x 64
        image = prepare_image(hc.read_grey(e["path"]), NATIVE, e["rotation"])
        maps = network_maps(net, weights, torch.from_numpy(image.copy())[None])
        coords = native.coords(e["id"], e["rotation"])
        expected = []
        for (top, left), view_coords in zip(view_grid(*image.shape, 32), coords):
            strides = [image.shape[0] // m.shape[2] for m in maps]
            cut = [m[:, :, top // s:(top + 32) // s, left // s:(left + 32) // s] for m, s in zip(maps, strides)]
            expected.append(reference_hypercolumns(cut, torch.from_numpy(view_coords[None].astype(np.int64)), 32)[0])
        got = native.hypercolumns(e["id"], e["rotation"]).astype(np.float32)
        assert close_in_float16(got, np.concatenate(expected))
        # The same views and pixels as tiles; the deepest tap sees across view borders natively, so it differs.
        assert np.array_equal(coords, tiles.coords(e["id"], e["rotation"]))
        deep = slice(TILES.n_features - 512, TILES.n_features)
        tiled = tiles.hypercolumns(e["id"], e["rotation"]).astype(np.float32)
        assert not np.allclose(got[:, deep], tiled[:, deep], rtol=0.05, atol=0.05 * np.abs(tiled[:, deep]).max())


def test_vlad_of_a_micrograph_takes_the_descriptors_of_all_its_views(micrographs, weights, tmp_path):
    with extract(micrographs, TILES, weights, tmp_path) as store:
        entries = [(e["id"], e["rotation"]) for e in micrographs]
        dense = [store.hypercolumns(*entry).astype(np.float32) for entry in entries]
        dictionary = VisualDictionary(5, device="cpu")
        dictionary.centroids_ = np.concatenate(dense)[::97][:5].copy()
        got = VladEncoder(dictionary, batch_size=4).transform_store(store, entries)  # batches straddle entries
        for x, vector in zip(dense, got):
            expected = vlad(torch.from_numpy(x)[None], torch.from_numpy(dictionary.centroids_))[0].numpy()
            assert float(vector @ expected) > 0.9999


class ReadRecorder:
    """Records every view a store hands out."""

    def __init__(self, store):
        self.views = []
        for name in ("read_hypercolumns_into", "read_taps_into"):
            method = getattr(store, name)
            setattr(store, name, lambda view, *args, _method=method, **kwargs:
                    (self.views.append(view), _method(view, *args, **kwargs))[1])


def test_views_of_a_micrograph_never_straddle_folds(micrographs, weights, tmp_path):
    """A fold's dictionary reads views of its training micrographs only, its validation vectors views of the
    validation micrographs only: a micrograph's tiles (and rotations) are one entry, in one fold."""
    with extract(micrographs, TILES, weights, tmp_path) as store:
        train = [(e["id"], e["rotation"]) for e in micrographs if e["id"] != "im2.tif"]
        val = [(e["id"], e["rotation"]) for e in micrographs if e["id"] == "im2.tif"]
        views_of = lambda entries: {v for views in store.entry_views(entries) for v in views}  # noqa: E731
        recorder = ReadRecorder(store)
        encoder = VladEncoder(VisualDictionary(4, sample_size=200, device="cpu"), batch_size=4)
        encoder.fit(store, train)
        assert recorder.views and set(recorder.views) <= views_of(train)
        recorder.views.clear()
        encoder.transform_store(store, val)
        assert set(recorder.views) == views_of(val) and not views_of(val) & views_of(train)


@pytest.mark.parametrize("settings", [TILES, NATIVE, SQUASH], ids=lambda s: s.input_mode)
def test_prediction_encodes_images_in_the_models_input_mode(micrographs, weights, tmp_path, settings):
    """New image files go through the mode the model records, giving the vectors its training shards give."""
    with extract(micrographs, settings, weights, tmp_path) as store:
        entries = [(e["id"], e["rotation"]) for e in micrographs]
        dictionary = VisualDictionary(4, sample_size=200, device="cpu")
        model = Model.from_parts(VladEncoder(dictionary, batch_size=4).fit(store, entries), None, store)
        from_store = model.encoder.transform_store(store, entries)
    assert model.extraction_.input_mode == settings.input_mode
    from_files = model.encode_images(micrographs, weights, CPU, batch_size=settings.batch_size)
    np.testing.assert_allclose(from_files, from_store, atol=1e-5)


def test_input_modes_are_compared_selected_and_deployed_through_the_dag(tmp_path):
    """Native as the main input mode, tiles beside it: each from its own shards, both in the comparison and the
    selection, the deployed model in the winner's mode and prediction in the model's."""
    from test_workflow import TINY, snakemake

    config = {**TINY, "demo": {**TINY["demo"], "size_range": [64, 96]}, "balance": {"strategies": ["rotate"]},
              "hypercolumns": {"image_size": 32, "max_side": 96, "batch_size": 8, "shards": 1,
                               "input_mode": "native"},
              "representations": {"pooled": True, "input_modes": ["tiles"]}, "k_values": [8],
              "classifiers": ["xgboost"], "model": {"scheme": "tiny", "method": "auto"}}
    snakemake(tmp_path, config, "results/comparison.tsv", "results/leakage_check.txt", "results/nested.tsv",
              "results/predictions/predictions.csv")
    results = tmp_path / "results"
    rows = read_table(results / "comparison.tsv")
    assert {r["method"] for r in rows} == {f"{mode}-{r}" for mode in ("native", "tiles")
                                           for r in ("k8/xgboost", "pooled/xgboost", "top/linear_softmax")}
    size_of = {r["id"]: (int(r["width"]), int(r["height"])) for r in read_table(results / "images.tsv")}
    for mode in ("native", "tiles"):
        with HypercolumnStore(sorted((results / "hypercolumns" / mode).glob("shard-*.h5"))) as store:
            assert store.settings.input_mode == mode and store.settings.max_side == 96
            views = {entry: len(v) for entry, v in zip(store.index, store.entry_views(list(store.index)))}
            assert views == {(i, r): len(store.settings.view_origins(*size_of[i])) for i, r in store.index}
            assert max(views.values()) > 1
    nested = read_table(results / "nested.tsv")[0]
    assert nested["n_candidates"] == "4"  # VLAD and pooled, in each mode
    meta = json.loads((results / "model" / "tiny" / "model.json").read_text())
    winner = meta["settings"]["selection"]["plain"]["winner"]
    assert meta["extraction"]["input_mode"] == Method.parse(winner).representation.input_mode
    with open(results / "predictions" / "predictions.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 24
