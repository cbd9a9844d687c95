import logging

import numpy as np
import pytest
import tifffile
from PIL import Image

from cntem.io import (IGNORED_LABELS_CSV, IGNORED_NOT_IN_CSV, IGNORED_SIDECAR, InputError, discover, ingest,
                      label_for_scheme, read_grey, to_grey_uint8)
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


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 65535, (300, 257), dtype=np.uint16),  # full range, odd sizes
    np.random.default_rng(1).normal(3000, 200, (513, 511)).clip(0, 65535).astype(np.uint16),  # a detector's
    np.random.default_rng(2).integers(100, 103, (50, 31), dtype=np.uint16),  # three values: ties everywhere
    np.array([[0, 65535]], np.uint16), np.full((10, 10), 7, np.uint16)],  # two pixels; constant
    ids=["uniform", "detector", "three-values", "two-pixels", "constant"])
def test_sixteen_bit_stretch_from_the_histogram_equals_the_float_percentiles(image):
    """The 16-bit shortcut gives every pixel exactly what the float64 percentile stretch (other depths) gives."""
    as_float = to_grey_uint8(image.astype(np.float32))
    assert np.array_equal(to_grey_uint8(image), as_float)


def test_rgb_uses_luma_weights_and_8_bit_passes_through():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200
    assert to_grey_uint8(rgb)[0, 0] == round(0.299 * 200)
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(to_grey_uint8(grey), grey)


def test_folders_layout_reads_every_format(folder_dataset):
    rows, skipped, ignored = ingest(folder_dataset, "folders")
    assert skipped == [] and ignored == {}
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
    rows = {r["id"]: r for r in discover(root, "niosh", str(labels))[0]}
    assert rows["CNT-MatrixSurface-0001.tif"]["source_label"] == "MS"
    assert rows["CNT-Matrix-0001.tif"]["source_label"] == "Ma"
    assert rows["NonCNT-0001.tif"]["source_label"] == "GS"
    assert rows["NonCNT-0002.tif"]["source_label"] == "SP"
    assert rows["NonCNT-0001.tif"]["group"] == rows["CNT-Fiber-0001.tif"]["group"] == "g1"


def test_every_bad_input_is_reported_in_one_message(folder_dataset):
    """Problems of every kind (labels CSV, formats, labels, pixels, schemes) come in one message, one pass."""
    (folder_dataset / "Cl" / "scan.dm3").write_bytes(b"\x00\x00\x00\x03 DigitalMicrograph")
    good = (folder_dataset / "Fi" / "img0.tif").read_bytes()
    (folder_dataset / "Fi" / "broken.tif").write_bytes(good[: len(good) // 3])
    (folder_dataset / "stray.png").write_bytes(b"")
    labels = folder_dataset / "labels.csv"
    labels.write_text("path,label\nCl/img1.png\nCl/gone.tif,Cl\n")
    with pytest.raises(InputError) as err:
        ingest(folder_dataset, "folders", str(labels), schemes={"4class": resolve_scheme("4class")}, n_folds=2)
    text = str(err.value)
    # an image format we cannot read is refused by name (the user expects it classified), not ignored
    assert "scan.dm3: unsupported format '.dm3' (Gatan DigitalMicrograph); export it as TIFF" in text
    assert "stray.png: no label" in text
    assert f"{labels}: line 2 ['Cl/img1.png'] needs 'path,label[,group]'" in text
    assert "'Cl/gone.tif' is not a file under" in text
    assert "broken.tif: unreadable or truncated" in text
    assert "class 'MS' of 4class has no image" in text
    assert len(err.value.problems) == 6


def test_a_labels_csv_with_a_byte_order_mark_is_read(folder_dataset):
    labels = folder_dataset / "labels.csv"  # as spreadsheet programs save "CSV UTF-8"
    labels.write_text("path,label,group\nCl/img1.png,Cl,pair\nCl/img2.jpg,Cl,pair\n", encoding="utf-8-sig")
    rows, _, _ = ingest(folder_dataset, "folders", str(labels))
    assert {r["id"]: r["group"] for r in rows if r["group"] == "pair"} == {"Cl/img1.png": "pair", "Cl/img2.jpg": "pair"}


def test_conflicting_rows_of_the_labels_csv_are_refused_naming_both(folder_dataset):
    write_image(folder_dataset / "Cl" / "cl_03.tif", seed=9)
    labels = folder_dataset / "labels.csv"
    labels.write_text("path,label\nCl/img1.png,Cl\nCl/img1.png,Cl\nCl/img1.png,Fi\ncl_03.tif,Cl\nCl/cl_03.tif,Fi\n")
    with pytest.raises(InputError) as err:
        discover(folder_dataset, "folders", str(labels))
    assert err.value.problems == [
        f"{labels}: lines 2 ['Cl/img1.png', 'Cl'] and 4 ['Cl/img1.png', 'Fi'] give Cl/img1.png different labels "
        "or groups; keep one of them",
        f"{labels}: rows 'cl_03.tif' and 'Cl/cl_03.tif' name Cl/cl_03.tif with different labels (Cl, Fi); keep one of them"]


def test_labels_csv_and_sidecar_files_in_the_data_folder_are_ignored_and_counted(folder_dataset):
    labels = folder_dataset / "labels.csv"  # the usual place for it
    labels.write_text("path,label,group\nCl/img1.png,Cl,pair\nCl/img2.jpg,Cl,pair\n")
    (folder_dataset / "README.txt").write_text("acquired 2024-05-02, 200 kV")
    (folder_dataset / "Cl" / "img1.json").write_text("{}")
    (folder_dataset / "Fi" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    rows, skipped, ignored = ingest(folder_dataset, "folders", str(labels))
    assert len(rows) == 18 and skipped == []
    groups = {r["id"]: r["group"] for r in rows}
    assert groups["Cl/img1.png"] == groups["Cl/img2.jpg"] == "pair"  # the CSV was read, not just skipped
    assert ignored == {IGNORED_LABELS_CSV: ["labels.csv"],
                       IGNORED_SIDECAR: ["Cl/img1.json", "Fi/Thumbs.db", "README.txt"]}


def test_layout_labels_ignores_every_file_the_csv_does_not_name(tmp_path):
    root = tmp_path / "data"
    for i, name in enumerate(["a.tif", "b.png", "unused.tif"]):
        write_image(root / name, seed=i)
    (root / "old" / "scan.dm4").parent.mkdir()
    (root / "old" / "scan.dm4").write_bytes(b"\x00\x00\x00\x04")
    (root / "notes.md").write_text("# notes")
    labels = root / "labels.csv"
    labels.write_text("a.tif,Cl\nb.png,Fi\n")
    rows, ignored = discover(root, "labels", str(labels))
    assert {r["id"]: r["source_label"] for r in rows} == {"a.tif": "Cl", "b.png": "Fi"}
    assert ignored == {IGNORED_LABELS_CSV: ["labels.csv"], IGNORED_SIDECAR: ["notes.md"],
                       IGNORED_NOT_IN_CSV: ["old/scan.dm4", "unused.tif"]}
    labels.write_text("a.tif,Cl\nb.png,Fi\nold/scan.dm4,Ma\n")  # named, so it must be readable
    with pytest.raises(InputError, match=r"scan.dm4: unsupported format '.dm4'"):
        discover(root, "labels", str(labels))


def test_on_bad_image_skip_logs_instead_of_failing(folder_dataset):
    (folder_dataset / "Ma" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder_dataset / "Ma" / "header_only.tif").write_bytes(b"II*\x00garbage")  # a TIFF header, no page
    rows, skipped, _ = ingest(folder_dataset, "folders", on_bad_image="skip")
    assert len(rows) == 18
    assert len(skipped) == 2 and "broken.png" in skipped[0]
    assert "header_only.tif: unreadable or truncated (TiffFileError: a TIFF header without any image)" in skipped[1]


def test_byte_identical_images(folder_dataset):
    src = folder_dataset / "Cl" / "img0.tif"
    (folder_dataset / "Cl" / "copy.tif").write_bytes(src.read_bytes())
    rows, _, _ = ingest(folder_dataset, "folders")
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
    rows, _, _ = ingest(folder_dataset, "folders")
    with pytest.raises(InputError, match=r"label 'Fibre-typo' is not in the class scheme"):
        label_for_scheme(rows, resolve_scheme("4class"), 5)
    rows = [r for r in rows if r["source_label"] != "Fibre-typo"]
    with pytest.raises(InputError, match=r"class 'Cl' has 6 independent image\(s\).*cv.folds is 7"):
        label_for_scheme(rows, resolve_scheme("4class"), 7)
    labelled, excluded = label_for_scheme(rows, {"Cl": "Cl", "Fi": "Fi", "Ma": None}, 5)
    assert {r["class"] for r in labelled} == {"Cl", "Fi"} and excluded == {"Ma": 6}


def test_a_scheme_class_with_no_image_is_an_error(folder_dataset):
    for image in (folder_dataset / "Ma").iterdir():
        image.unlink()  # an empty class folder must not quietly turn 3 classes into 2
    rows, _, _ = ingest(folder_dataset, "folders")
    with pytest.raises(InputError, match=r"class 'Ma' of cnt3 has no image \(no image is labelled Ma\)"):
        label_for_scheme(rows, {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma"}, 5, scheme_name="cnt3")
    with pytest.raises(InputError) as err:
        label_for_scheme(rows, {"Cl": "CNT", "Fi": "CNT", "Ma": "M", "MS": "M"}, 5, scheme_name="merged")
    assert "class 'M' of merged has no image (no image is labelled MS or Ma)" in str(err.value)
    assert "drop merged from schemes" in str(err.value) and "'CNT'" not in str(err.value)


def test_8class_without_non_cnt_sub_classes_says_how_to_give_them():
    rows = [{"path": f"/data/{label}-{i}.tif", "source_label": label, "group": f"{label}-{i}"}
            for label in ["Cl", "Fi", "Ma", "MS", "NC"] for i in range(6)]
    with pytest.raises(InputError) as err:
        label_for_scheme(rows, resolve_scheme("8class"), 5, scheme_name="8class")
    text = str(err.value)
    for sub_class in ["GS", "SP", "HDP", "PR"]:
        assert f"class '{sub_class}' of 8class has no image" in text
    assert "class 'O'" not in text and "class 'Cl'" not in text  # Others is left out, as in the paper
    assert "6 image(s) are labelled NC (Non-CNT) without a sub-class" in text
    assert "in data.labels_csv" in text and "drop 8class from schemes" in text


@pytest.mark.parametrize("writer", ["tifffile", "pillow"])
def test_multi_page_tiff_reads_page_0_with_a_warning(folder_dataset, caplog, writer):
    pages = np.random.default_rng(5).integers(0, 256, size=(3, 40, 48), dtype=np.uint8)
    stack = folder_dataset / "Cl" / "stack.tif"
    if writer == "tifffile":
        tifffile.imwrite(stack, pages, photometric="minisblack")
    else:  # what most other software writes: plain pages, no tifffile shape metadata
        frames = [Image.fromarray(page) for page in pages]
        frames[0].save(stack, save_all=True, append_images=frames[1:])
    assert np.array_equal(read_grey(stack), pages[0])  # page 0 itself, not a luma mix of 3 pages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cntem.io"):
        rows, _, _ = ingest(folder_dataset, "folders")
    assert {r["id"]: (r["width"], r["height"]) for r in rows}["Cl/stack.tif"] == (48, 40)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(stack) in warnings[0] and "3 pages" in warnings[0]


def test_tiff_thumbnail_pages_and_single_page_rgb_are_read_as_one_image(tmp_path, caplog):
    full = np.random.default_rng(6).integers(0, 256, size=(40, 48), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "with_thumbnail.tif") as tif:
        tif.write(full)
        tif.write(full[::4, ::4], subfiletype=1)  # a reduced-resolution preview of page 0
    rgb = np.random.default_rng(7).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "interleaved.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    with caplog.at_level(logging.WARNING, logger="cntem.io"):
        assert np.array_equal(read_grey(tmp_path / "with_thumbnail.tif"), full)
        luma = np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        assert np.array_equal(read_grey(tmp_path / "interleaved.tif"), luma)
        assert np.array_equal(read_grey(tmp_path / "planar.tif"), luma)
    assert caplog.records == []  # a preview page or RGB samples make no stack


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


def test_the_folder_fingerprint_changes_when_a_file_is_added_removed_or_replaced(tmp_path):
    import os

    from cntem.io import folder_fingerprint

    write_image(tmp_path / "Cl" / "a.tif", seed=1)
    write_image(tmp_path / "Fi" / "b.tif", seed=2)
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first  # reading changes nothing
    write_image(tmp_path / "Fi" / "c.tif", seed=3)
    added = folder_fingerprint(tmp_path)
    (tmp_path / "Fi" / "c.tif").unlink()
    assert added != first and folder_fingerprint(tmp_path) == first
    stat = (tmp_path / "Cl" / "a.tif").stat()
    write_image(tmp_path / "Cl" / "a.tif", seed=4)  # same name and size, other pixels
    os.utime(tmp_path / "Cl" / "a.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert folder_fingerprint(tmp_path) != first
