
import numpy as np
import pytest

from cntem.io import InputError, discover, ingest, label_for_scheme, read_grey, to_grey_uint8
from cntem.schemes import BUILTIN_SCHEMES, canonical_label, resolve_scheme

from conftest import write_image


def listing(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_sixteen_bit_is_stretched_between_robust_percentiles():
    a = np.linspace(1000, 5000, 10000).reshape(100, 100).astype(np.uint16)
    a[0, 0] = 65535  # one hot pixel must not squash the contrast
    g = to_grey_uint8(a)
    assert g.dtype == np.uint8
    assert g.min() == 0 and g.max() == 255
    assert 120 <= g[50, 50] <= 135  # mid-range stays mid-grey


def test_rgb_uses_luma_weights_and_8_bit_passes_through():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200
    assert to_grey_uint8(rgb)[0, 0] == round(0.299 * 200)
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(to_grey_uint8(grey), grey)


def test_folders_layout_reads_every_format(folder_dataset):
    rows, skipped = ingest(folder_dataset, "folders")
    assert skipped == []
    assert len(rows) == 18
    assert {r["source_label"] for r in rows} == {"Cl", "Fi", "Ma"}
    by_id = {r["id"]: r for r in rows}
    assert by_id["Cl/img5.tif"]["bit_depth"] == 16
    assert by_id["Cl/img1.png"]["width"] == 48 and by_id["Cl/img1.png"]["height"] == 40
    assert all(len(r["sha256"]) == 64 for r in rows)
    assert all(r["group"] == r["id"] for r in rows)


def test_niosh_names_and_labels_csv_override_labels_and_groups(tmp_path):
    root = tmp_path / "flat"
    for name in ["CNT-Cluster-0001", "CNT-Fiber-0001", "CNT-Matrix-0001", "CNT-MatrixSurface-0001",
                 "NonCNT-0001", "NonCNT-0002"]:
        write_image(root / f"{name}.tif", seed=len(name) + int(name[-1]))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,group\nNonCNT-0001.tif,Graphene Sheets,g1\nNonCNT-0002.tif,SP,\n"
                      "CNT-Fiber-0001.tif,Fiber,g1\n")
    rows = {r["id"]: r for r in discover(root, "niosh", str(labels))}
    assert rows["CNT-MatrixSurface-0001.tif"]["source_label"] == "MS"
    assert rows["CNT-Matrix-0001.tif"]["source_label"] == "Ma"
    assert rows["NonCNT-0001.tif"]["source_label"] == "GS"
    assert rows["NonCNT-0002.tif"]["source_label"] == "SP"
    assert rows["NonCNT-0001.tif"]["group"] == rows["CNT-Fiber-0001.tif"]["group"] == "g1"


def test_every_bad_input_is_reported_in_one_message(folder_dataset):
    (folder_dataset / "Cl" / "notes.txt").write_text("not an image")
    good = (folder_dataset / "Fi" / "img0.tif").read_bytes()
    (folder_dataset / "Fi" / "broken.tif").write_bytes(good[: len(good) // 3])
    (folder_dataset / "stray.png").write_bytes(b"")
    with pytest.raises(InputError) as err:
        ingest(folder_dataset, "folders")
    text = str(err.value)
    assert "notes.txt: unsupported format" in text
    assert "stray.png: no label" in text  # discovery problems come first, all at once
    (folder_dataset / "Cl" / "notes.txt").unlink()
    (folder_dataset / "stray.png").unlink()
    with pytest.raises(InputError, match=r"broken.tif: unreadable or truncated"):
        ingest(folder_dataset, "folders")


def test_on_bad_image_skip_logs_instead_of_failing(folder_dataset):
    (folder_dataset / "Ma" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rows, skipped = ingest(folder_dataset, "folders", on_bad_image="skip")
    assert len(rows) == 18
    assert len(skipped) == 1 and "broken.png" in skipped[0]


def test_byte_identical_images(folder_dataset):
    src = folder_dataset / "Cl" / "img0.tif"
    (folder_dataset / "Cl" / "copy.tif").write_bytes(src.read_bytes())
    rows, _ = ingest(folder_dataset, "folders")
    groups = {r["id"]: r["group"] for r in rows}
    assert groups["Cl/copy.tif"] == groups["Cl/img0.tif"]  # one label: one group
    (folder_dataset / "Fi" / "copy.tif").write_bytes(src.read_bytes())
    with pytest.raises(InputError, match="byte-identical images carry different labels"):
        ingest(folder_dataset, "folders")


def test_empty_dataset_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no labelled images"):
        discover(tmp_path / "empty", "folders")
    with pytest.raises(InputError, match="no such folder"):
        discover(tmp_path / "nowhere", "folders")


def test_label_not_in_scheme_and_too_few_images_per_class(folder_dataset):
    write_image(folder_dataset / "Fibre-typo" / "x.tif", seed=9)
    rows, _ = ingest(folder_dataset, "folders")
    with pytest.raises(InputError, match=r"label 'Fibre-typo' is not in the class scheme"):
        label_for_scheme(rows, resolve_scheme("4class"), 5)
    rows = [r for r in rows if r["source_label"] != "Fibre-typo"]
    with pytest.raises(InputError, match=r"class 'Cl' has 6 independent image\(s\).*cv.folds is 7"):
        label_for_scheme(rows, resolve_scheme("4class"), 7)
    labelled, excluded = label_for_scheme(rows, {"Cl": "Cl", "Fi": "Fi", "Ma": None}, 5)
    assert {r["class"] for r in labelled} == {"Cl", "Fi"} and excluded == {"Ma": 6}


def test_ingestion_never_writes_into_the_input_folder(folder_dataset):
    before = listing(folder_dataset)
    ingest(folder_dataset, "folders")
    read_grey(folder_dataset / "Cl" / "img0.tif")
    assert listing(folder_dataset) == before


def test_schemes_follow_the_paper():
    assert canonical_label("CNT-MatrixSurface") == "MS" and canonical_label("polymer residue") == "PR"
    four, eight = BUILTIN_SCHEMES["4class"], BUILTIN_SCHEMES["8class"]
    assert sorted(c for c in four.values() if c) == ["Cl", "Fi", "MS", "Ma"]
    assert eight["O"] is None and eight["NC"] is None and eight["HDP"] == "HDP"
    assert BUILTIN_SCHEMES["5class"]["GS"] == "NC"
    custom = resolve_scheme("cnt", {"cnt": {"Cluster": "CNT", "Fiber": "CNT", "NonCNT": "other"}})
    assert custom == {"Cl": "CNT", "Fi": "CNT", "NC": "other"}
    with pytest.raises(ValueError, match="unknown class scheme"):
        resolve_scheme("3class")
