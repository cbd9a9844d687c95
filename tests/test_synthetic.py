import csv

import numpy as np
import tifffile

from cntem.io import ingest
from cntem.plots import contact_sheet
from cntem.synthetic import CLASSES, generate_dataset, render


def test_render_is_deterministic_and_seed_dependent():
    a = render("Fi", seed=1, index=0, size_range=(64, 96))
    assert np.array_equal(a, render("Fi", seed=1, index=0, size_range=(64, 96)))
    assert not np.array_equal(a, render("Fi", seed=2, index=0, size_range=(64, 96)))


def test_sizes_and_bit_depths_vary():
    images = [render(c, 0, i, size_range=(256, 1024)) for c in CLASSES for i in range(3)]
    sizes = {im.shape[0] for im in images}
    assert min(sizes) >= 256 and max(sizes) <= 1024 and len(sizes) > 10
    assert {im.dtype for im in images} == {np.dtype(np.uint8), np.dtype(np.uint16)}


def test_mass_thickness_contrast_orders_the_classes():
    def dark_fraction(cls):
        ims = [render(cls, 3, i, (256, 256), bit_depths=(8,)) for i in range(4)]
        return np.mean([(im < 0.5 * np.median(im)).mean() for im in ims])

    # Thick agglomerates and large particles absorb far more than translucent graphene sheets.
    assert dark_fraction("MS") > dark_fraction("Ma") > 5 * dark_fraction("GS")
    assert dark_fraction("Fi") < dark_fraction("Ma")


def test_dataset_uses_niosh_names_and_a_labels_file(tmp_path):
    labels = generate_dataset(tmp_path / "images", {"Cl": 2, "Fi": 1, "GS": 2, "HDP": 1}, seed=0, size_range=(64, 80))
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["CNT-Cluster-0001.tif", "CNT-Cluster-0002.tif", "CNT-Fiber-0001.tif",
                     "NonCNT-0001.tif", "NonCNT-0002.tif", "NonCNT-0003.tif"]
    rows = list(csv.reader(open(labels)))
    assert rows[0] == ["path", "label"] and sorted(r[1] for r in rows[1:]) == ["GS", "GS", "HDP"]
    table, _, _ = ingest(tmp_path / "images", "niosh", labels)
    assert sorted(r["source_label"] for r in table) == ["Cl", "Cl", "Fi", "GS", "GS", "HDP"]
    assert tifffile.imread(tmp_path / "images" / "CNT-Fiber-0001.tif").ndim == 2


def test_contact_sheet_is_written(tmp_path):
    generate_dataset(tmp_path / "images", {"Cl": 2, "Ma": 2}, seed=0, size_range=(64, 64))
    table, _, _ = ingest(tmp_path / "images", "niosh")
    out = tmp_path / "sheet.png"
    contact_sheet([{**r, "class": r["source_label"]} for r in table], out, per_class=2)
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").exists()
