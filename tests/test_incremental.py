"""Append-only shards: adding images extracts only their entries, and the store does not depend on its history."""
import os

import h5py
import numpy as np
import torch

from cntem.dictionary import VisualDictionary
from cntem.features import ExtractionSettings
from cntem.hypercolumns import extract_shard
from cntem.shards import HypercolumnStore, StoreContents, new_shard_count, shard_manifest
from cntem.vlad import VladEncoder

from conftest import write_image

SMALL = ExtractionSettings(density=0.1, image_size=32, batch_size=4)


def micrographs(root, classes: dict[str, range]) -> list[dict]:
    """Image-table rows of 40 x 40 px images, class by class (seeded by class and number)."""
    rows = []
    for c, (cls, numbers) in enumerate(sorted(classes.items())):
        for i in numbers:
            path = write_image(root / cls / f"{cls}{i:03d}.tif", seed=1000 * c + i, size=(40, 40))
            rows.append({"id": f"{cls}/{path.name}", "path": str(path), "class": cls, "width": 40, "height": 40})
    return rows


def plan(images, augmented=()) -> list[dict]:
    """A plan training every image, with rotated copies of the classes in `augmented`."""
    return [{"id": r["id"], "class": r["class"], "rotation": rot} for r in images
            for rot in ((0, 90) if r["class"] in augmented else (0,))]


def extract_new_shards(rows, store_dir, weights) -> StoreContents:
    """What the workflow's extraction jobs do: every shard of `rows` not on disk, from its rows."""
    held = StoreContents.read(store_dir)
    for shard in sorted({r["shard"] for r in rows} - set(held.held)):
        extract_shard([r for r in rows if r["shard"] == shard], store_dir / f"shard-{shard:03d}.h5", weights, SMALL,
                      torch.device("cpu"), workers=0, progress=False)
    return StoreContents.read(store_dir)


def as_extracted(rows) -> StoreContents:
    """A store holding exactly `rows`, its shards written now (after every image file)."""
    now = max(os.stat(r["path"]).st_mtime_ns for r in rows) + 1
    held = {}
    for r in rows:
        held[r["shard"]] = held.get(r["shard"], 0) + 1
    return StoreContents({(r["id"], r["rotation"]): r["shard"] for r in rows}, dict.fromkeys(held, now), held,
                         dict.fromkeys(held, 0))


def test_growth_by_any_factor_keeps_every_extracted_entry_in_its_shard(tmp_path):
    first = micrographs(tmp_path, {"Cl": range(30), "Fi": range(10)})
    rows = shard_manifest(first, [plan(first, {"Fi"})], 3, SMALL)
    assert len(rows) == 70 and sorted({r["shard"] for r in rows}) == [0, 1, 2]
    for factor in (1.02, 2, 10):  # 1 image, as many again, 9 times as many
        store = as_extracted(rows)
        grown = first + micrographs(tmp_path, {"Cl": range(30, round(30 * factor)), "Fi": range(10, round(10 * factor))})
        again = shard_manifest(grown, [plan(grown, {"Fi"})], 3, SMALL, store)
        before = {(r["id"], r["rotation"]): r["shard"] for r in rows}
        new = [r for r in again if (r["id"], r["rotation"]) not in before]
        assert {(r["id"], r["rotation"]): r["shard"] for r in again if (r["id"], r["rotation"]) in before} == before
        assert len(new) == len(again) - len(rows) and {r["shard"] for r in new} == set(range(3, 3 + min(3, len(new))))
    # auto: one shard per 512 views of the new entries (one for a small addition)
    assert [new_shard_count("auto", n) for n in (0, 1, 512, 513, 9700)] == [1, 1, 1, 2, 19]
    auto = shard_manifest(grown, [plan(grown, {"Fi"})], "auto", SMALL, as_extracted(rows))
    assert len(auto) == 700 and {r["shard"] for r in auto if (r["id"], r["rotation"]) not in before} == {3, 4}


def test_removed_replaced_and_no_longer_rotated_images(tmp_path):
    images = micrographs(tmp_path, {"Cl": range(12), "Fi": range(6)})
    rows = shard_manifest(images, [plan(images, {"Fi"})], 2, SMALL)
    store = as_extracted(rows)
    # Removed: its entries are not read any more, and stay where they are until the space is reclaimed.
    fewer = shard_manifest(images[1:], [plan(images[1:], {"Fi"})], 2, SMALL, store)
    assert fewer == [r for r in rows if r["id"] != images[0]["id"]]
    assert store.unused(fewer) == {rows[0]["shard"]: 1}
    sized = StoreContents(store.shard_of, store.mtime_ns, store.held, dict.fromkeys(store.held, 1000))
    assert sized.unused_bytes(sized.unused(fewer)) == 1000 / store.held[rows[0]["shard"]]  # its share of its shard
    # Balanced classes: Fi is no longer rotated; its rotated copies are kept, and used again when it is.
    balanced = shard_manifest(images, [plan(images)], 2, SMALL, store)
    assert sum(store.unused(balanced).values()) == 18 and {r["shard"] for r in balanced} == {0, 1}
    assert shard_manifest(images, [plan(images, {"Fi"})], 2, SMALL, store) == rows
    # Replaced (its file newer than its shard): its new content goes to a new shard, which the store reads last.
    replaced = images[3]
    write_image(tmp_path / replaced["id"], seed=77, size=(40, 40))
    os.utime(replaced["path"], ns=(store.mtime_ns[0] + 10**9,) * 2)
    moved = shard_manifest(images, [plan(images, {"Fi"})], 2, SMALL, store)
    assert {r["id"]: r["shard"] for r in moved if r["shard"] >= 2} == {replaced["id"]: 2}
    assert [r for r in moved if r["id"] != replaced["id"]] == [r for r in rows if r["id"] != replaced["id"]]


def test_a_store_built_in_additions_equals_one_built_at_once(tmp_path, weights):
    """Adding images to a store computes only their entries, rewrites no shard, and gives the hypercolumns,
    pooled features, dictionary and VLAD vectors of the same images extracted at once."""
    counts = {"Cl": range(8), "Fi": range(4)}
    stages = [micrographs(tmp_path / "data", counts)]
    stages.append(stages[0] + micrographs(tmp_path / "data", {"Cl": range(8, 16), "Fi": range(4, 8)}))  # doubled
    stages.append(stages[1] + micrographs(tmp_path / "data", {"Fi": range(8, 9)}))  # one more
    grown, once = tmp_path / "grown", tmp_path / "once"
    grown.mkdir(), once.mkdir()
    contents, written = StoreContents(), {}
    for images in stages:
        rows = shard_manifest(images, [plan(images, {"Fi"})], "auto", SMALL, contents)
        contents = extract_new_shards(rows, grown, weights)
        for shard, mtime in written.items():
            assert contents.mtime_ns[shard] == mtime  # not rewritten
        assert sum(contents.held.values()) == len(rows)  # each entry computed once
        written = dict(contents.mtime_ns)
    assert len(written) == 3  # one shard a stage: "auto" makes one per 512 views
    at_once = shard_manifest(stages[-1], [plan(stages[-1], {"Fi"})], 2, SMALL)
    extract_new_shards(at_once, once, weights)
    entries = sorted((r["id"], r["rotation"]) for r in rows)
    assert entries == sorted((r["id"], r["rotation"]) for r in at_once)
    paths = {d: sorted(d.glob("shard-*.h5")) for d in (grown, once)}
    with HypercolumnStore(paths[grown]) as a, HypercolumnStore(paths[once]) as b:
        for key in entries:
            assert a.hypercolumns(*key).tobytes() == b.hypercolumns(*key).tobytes(), key
        assert a.pooled(entries).tobytes() == b.pooled(entries).tobytes()
        assert a.pooled_hypercolumns(entries).tobytes() == b.pooled_hypercolumns(entries).tobytes()
        dictionaries = [VisualDictionary(k=4, sample_size=600, niter=5, device="cpu").fit(s, entries) for s in (a, b)]
        assert dictionaries[0].centroids_.tobytes() == dictionaries[1].centroids_.tobytes()
        vlad = [VladEncoder(d, batch_size=4).transform_store(s, entries) for d, s in zip(dictionaries, (a, b))]
        assert vlad[0].tobytes() == vlad[1].tobytes() and np.abs(vlad[0]).sum() > 0
    with h5py.File(paths[grown][-1]) as last:
        assert list(last["ids"].asstr()[()]) == ["Fi/Fi008.tif"] * 4  # the one image and its rotated copies


def test_the_planner_reads_complete_shards_of_this_format_only(tmp_path, weights):
    images = micrographs(tmp_path / "data", {"Cl": range(3)})
    rows = shard_manifest(images, [plan(images)], 1, SMALL)
    contents = extract_new_shards(rows, tmp_path, weights)
    (tmp_path / "shard-001.h5.part").write_bytes(b"cut off")  # a shard being written
    with h5py.File(tmp_path / "shard-002.h5", "w") as old:  # the first format: no attribute, no ids
        old.create_dataset("hcol", data=np.zeros((1, 4, 8), np.float16))
    assert StoreContents.read(tmp_path) == contents and contents.held == {0: 3}
    assert shard_manifest(images, [plan(images)], 1, SMALL, contents) == rows
