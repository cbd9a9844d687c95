"""Finding, reading and validating the input micrographs; tab-separated tables.

Everything here only *reads* the input folder. Validation collects every problem first and raises
one :class:`InputError` that lists each offending file with the fix, so a bad dataset stops the
workflow before any network runs.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from . import ActionableError
from .schemes import NC_SUBCLASSES, canonical_label, scheme_classes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
# Files that sit beside micrographs and are clearly not images (notes, exports, instrument
# metadata, OS thumbnail caches): ignored and counted, so a labels CSV or a README may live in
# the data folder.
SIDECAR_SUFFIXES = {".csv", ".tsv", ".txt", ".md", ".rst", ".json", ".xml", ".yaml", ".yml", ".ini",
                    ".log", ".pdf", ".html", ".htm", ".doc", ".docx", ".xls", ".xlsx"}
SIDECAR_NAMES = {"thumbs.db", "ehthumbs.db"}
# Microscope image formats this workflow cannot decode. They are refused (not ignored): whoever put
# them in the data folder most likely expects them to be classified.
MICROSCOPE_FORMATS = {".dm3": "Gatan DigitalMicrograph", ".dm4": "Gatan DigitalMicrograph",
                      ".mrc": "MRC", ".mrcs": "MRC", ".ser": "FEI TIA", ".emd": "Velox/EMD"}
# Kinds of files discover() leaves out without complaint, as keys of its `ignored` mapping.
IGNORED_LABELS_CSV = "labels CSV"
IGNORED_SIDECAR = "metadata/sidecar"
IGNORED_NOT_IN_CSV = "not named in the labels CSV (layout 'labels')"
IMAGE_COLUMNS = ["id", "path", "source_label", "group", "width", "height", "bit_depth", "sha256"]
# NIOSH Dataverse doi:10.7910/DVN/5O0SF7 names: CNT-Cluster-0001.tif ... NonCNT-1195.tif
NIOSH_NAME = re.compile(r"^(CNT-Cluster|CNT-Fiber|CNT-MatrixSurface|CNT-Matrix|NonCNT)-(\d+)$", re.I)
# Percentiles used to map 16-bit (and float) micrographs onto 0-255: robust to hot/dead pixels.
HIGH_DEPTH_PERCENTILES = (0.5, 99.5)


class InputError(ActionableError, ValueError):
    """Bad input data; the message lists every offending file and how to fix it."""

    def __init__(self, problems: list[str], header: str = "the input data has problems"):
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{header} ({len(problems)}):\n{listing}")


# ----------------------------------------------------------------------------- tables
def write_table(path: str | os.PathLike, rows: list[dict], columns: list[str], delimiter: str = "\t") -> None:
    """Write rows as a TSV, or a CSV with delimiter ",", atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, delimiter=delimiter, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a TSV written by :func:`write_table`, as dicts of strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# ----------------------------------------------------------------------------- pixels
def to_grey_uint8(array: np.ndarray) -> np.ndarray:
    """Any decoded image -> 2-D uint8 grey.

    RGB(A) is converted with the ITU-R 601 luma weights (alpha dropped). 8-bit data is kept as is;
    16-bit, 32-bit and float data are stretched linearly between the 0.5th and 99.5th percentiles
    and clipped, because TEM detectors rarely use their full range and a few saturated pixels
    would otherwise squash the contrast.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # planar TIFF (C, H, W)
    if a.ndim == 3:
        if a.shape[-1] == 1:
            a = a[..., 0]
        elif a.shape[-1] in (3, 4):
            a = a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            if np.asarray(array).dtype == np.uint8:
                return np.clip(np.rint(a), 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"unsupported image shape {np.asarray(array).shape}")
    if a.ndim != 2:
        raise ValueError(f"unsupported image shape {np.asarray(array).shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return _stretch_uint16(a)
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, HIGH_DEPTH_PERCENTILES)
    return _stretch(a, lo, hi)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """float64 values -> uint8, linear from lo (0) to hi (255), clipped."""
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.clip(np.rint((values - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def _stretch_uint16(a: np.ndarray) -> np.ndarray:
    """The percentile stretch of a 16-bit image, exactly as for any other depth, from its histogram.

    The most common depth of TEM detectors. Sorting a 4k x 4k frame's pixels as float64 for two
    percentiles and stretching every pixel cost ~1 s an image; from the 65,536-bin histogram the
    percentiles are the same order statistics (numpy's linear interpolation between neighbours), and
    the stretch is one lookup table over the values that occur.
    """
    counts = np.bincount(a.ravel(), minlength=1 << 16)
    ends = np.cumsum(counts)  # ends[v]: pixels with a value <= v

    def order_statistic(k: int) -> float:  # the k-th smallest pixel value (0-based)
        return float(np.searchsorted(ends, k, side="right"))

    bounds = []
    for q in HIGH_DEPTH_PERCENTILES:
        position = (a.size - 1) * q / 100.0
        below = int(np.floor(position))
        low, high = order_statistic(below), order_statistic(min(below + 1, a.size - 1))
        bounds.append(low + (high - low) * (position - below))
    return _stretch(np.arange(1 << 16, dtype=np.float64), *bounds)[a]


def _read_tiff_page0(path: Path) -> np.ndarray:
    """The first page of a TIFF, as stored: (H, W), (H, W, C) or planar (C, H, W) for one RGB page.

    ``tifffile.imread`` returns a whole stack as (pages, H, W), which would later pass for planar
    RGB and mix three micrographs into one, so only page 0 is read. Extra pages that are
    reduced-resolution copies (thumbnails, previews) of page 0 are normal and pass silently;
    other extra pages make a stack, and the warning says only its first page is used.
    """
    with tifffile.TiffFile(path) as tif:
        if not len(tif.pages):  # a TIFF header and nothing after it: a cut-off copy or save
            raise tifffile.TiffFileError("a TIFF header without any image")
        full_pages = sum(1 for page in tif.pages if not page.is_reduced)
        if full_pages > 1:
            log.warning("%s: multi-page TIFF (%d pages); only its first page is read. To use another "
                        "page, save it as a TIFF of its own", path, len(tif.pages))
        return tif.pages[0].asarray()


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff_page0(path)
    with Image.open(path) as im:
        im.load()  # forces a full decode: truncated files fail here
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.array(im)
        if im.mode not in ("L", "RGB", "RGBA"):
            im = im.convert("RGB")
        return np.array(im)


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to 2-D uint8 grey (see :func:`to_grey_uint8`)."""
    return to_grey_uint8(_decode(Path(path)))


def probe(path: Path) -> tuple[int, int, int]:
    """Width, height and bit depth of a file, decoding it fully so that damage shows up."""
    raw = _decode(path)
    bit_depth = 8 * raw.dtype.itemsize if raw.dtype != bool else 1
    grey = to_grey_uint8(raw)
    return grey.shape[1], grey.shape[0], bit_depth


def folder_fingerprint(root: str | os.PathLike) -> str:
    """A hash of the names, sizes and modification times of every file under `root`: cheap (no file is read), and
    it changes when a file is added, removed or replaced. The ingest rule's params: a folder is no rule input."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- discovery
def _label_from_layout(rel: Path, layout: str) -> str | None:
    if layout == "folders":
        return canonical_label(rel.parts[0]) if len(rel.parts) > 1 else None
    if layout == "niosh":
        match = NIOSH_NAME.match(rel.stem)
        return canonical_label(match.group(1)) if match else None
    return None  # layout "labels": the CSV is the only source


def read_labels_csv(path: str | os.PathLike) -> tuple[dict, dict, list[str]]:
    """Labels CSV (``path,label[,group]``; header optional) -> ({rel: label}, {rel: group}, problems).

    Paths are relative to the data folder; a bare file name is accepted when it is unique. A byte-order
    mark (spreadsheet programs' "CSV UTF-8") is dropped. Two rows giving one path different labels or
    groups are a problem naming both rows; a repeated identical row is not.
    """
    labels, groups, problems, first_row = {}, {}, [], {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [(n, r) for n, r in enumerate(csv.reader(fh), start=1) if r and not r[0].startswith("#")]
    if rows and rows[0][1][0].strip().lower() == "path":
        rows = rows[1:]
    for lineno, row in rows:
        if len(row) < 2 or not row[1].strip():
            problems.append(f"{path}: line {lineno} {row!r} needs 'path,label[,group]'")
            continue
        rel = Path(row[0].strip()).as_posix()
        label, group = canonical_label(row[1]), row[2].strip() if len(row) > 2 else ""
        if rel in first_row:
            earlier_line, earlier = first_row[rel]
            if (label, group) != (labels[rel], groups.get(rel, "")):
                problems.append(f"{path}: lines {earlier_line} {earlier!r} and {lineno} {row!r} give {rel} "
                                "different labels or groups; keep one of them")
            continue
        first_row[rel] = (lineno, row)
        labels[rel] = label
        if group:
            groups[rel] = group
    return labels, groups, problems


def _is_sidecar(path: Path) -> bool:
    return path.suffix.lower() in SIDECAR_SUFFIXES or path.name.lower() in SIDECAR_NAMES


def _unsupported_format(path: Path) -> str:
    microscope_format = MICROSCOPE_FORMATS.get(path.suffix.lower())
    if microscope_format:
        return (f"{path}: unsupported format '{path.suffix}' ({microscope_format}); export it as TIFF "
                "(16-bit keeps the full range; e.g. Fiji with Bio-Formats) or move it out of the data folder")
    return (f"{path}: unsupported format '{path.suffix}'; convert it to TIFF/PNG/JPEG/BMP or "
            "move it out of the data folder")


def discover(data_dir: str | os.PathLike, layout: str, labels_csv: str | None = None,
             ) -> tuple[list[dict], dict[str, list[str]]]:
    """Every image file under ``data_dir`` with its source label and group (no pixel reads).

    Returns (rows, ignored). Rows have ``id`` (the path relative to data_dir), ``path``,
    ``source_label`` and ``group``. ``ignored`` maps each kind of file left out on purpose
    (IGNORED_LABELS_CSV, IGNORED_SIDECAR, IGNORED_NOT_IN_CSV) to the relative paths of those files.
    Raises InputError for an empty folder, files in formats that cannot be read, unlabelled images
    and labels-CSV rows that name no file or conflict.
    """
    rows, ignored, problems = _discover(Path(data_dir), layout, labels_csv)
    if problems:
        raise InputError(problems)
    return rows, ignored


def _discover(data_dir: Path, layout: str, labels_csv: str | None) -> tuple[list[dict], dict, list[str]]:
    """discover's (rows, ignored, problems): the rows of every file that has no problem."""
    if not data_dir.is_dir():
        return [], {}, [f"{data_dir}: no such folder; set data.dir in the config to your image folder"]
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    csv_labels, csv_groups, problems = ({}, {}, [])
    if labels_csv:
        csv_labels, csv_groups, problems = read_labels_csv(labels_csv)
    by_name = defaultdict(list)
    for f in files:
        by_name[f.name].append(f.relative_to(data_dir).as_posix())

    def resolve(rel_in_csv: str) -> str | None:
        if (data_dir / rel_in_csv).is_file():
            return rel_in_csv
        hits = by_name.get(Path(rel_in_csv).name, [])
        return hits[0] if len(hits) == 1 else None

    labels_by_rel, groups_by_rel, named_by = {}, {}, {}
    for rel_in_csv, label in csv_labels.items():
        rel = resolve(rel_in_csv)
        if rel is None:
            problems.append(f"{labels_csv}: '{rel_in_csv}' is not a file under {data_dir}; fix the path "
                            "(relative to data.dir) or remove the row")
            continue
        if labels_by_rel.get(rel, label) != label:  # a bare name and a path naming one file
            problems.append(f"{labels_csv}: rows '{named_by[rel]}' and '{rel_in_csv}' name {rel} with different "
                            f"labels ({labels_by_rel[rel]}, {label}); keep one of them")
            continue
        labels_by_rel[rel], named_by[rel] = label, rel_in_csv
        if rel_in_csv in csv_groups:
            groups_by_rel[rel] = csv_groups[rel_in_csv]

    labels_csv_file = Path(labels_csv).resolve() if labels_csv else None
    rows, ignored = [], defaultdict(list)
    for f in files:
        rel = f.relative_to(data_dir)
        rel_s = rel.as_posix()
        if f.resolve() == labels_csv_file:
            ignored[IGNORED_LABELS_CSV].append(rel_s)
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            if rel_s in labels_by_rel:  # the CSV asks for this file to be classified
                problems.append(_unsupported_format(f))
            elif _is_sidecar(f):
                ignored[IGNORED_SIDECAR].append(rel_s)
            elif layout == "labels":
                ignored[IGNORED_NOT_IN_CSV].append(rel_s)
            else:
                problems.append(_unsupported_format(f))
            continue
        label = labels_by_rel.get(rel_s) or _label_from_layout(rel, layout)
        if label is None:
            if layout == "labels":  # with layout 'labels' only the files the CSV names take part
                ignored[IGNORED_NOT_IN_CSV].append(rel_s)
                continue
            hint = ("put it in a class sub-folder" if layout == "folders"
                    else "name it like CNT-Fiber-0001.tif" if layout == "niosh" else "")
            problems.append(f"{f}: no label; {hint} or give it a row in the labels CSV")
            continue
        rows.append({"id": rel_s, "path": str(f.resolve()), "source_label": label,
                     "group": groups_by_rel.get(rel_s, rel_s)})
    if not rows and not problems:
        problems.append(f"{data_dir}: no labelled images found (layout '{layout}'); check data.dir, "
                        "data.layout and data.labels_csv")
    return rows, dict(ignored), problems


def ingest(data_dir, layout: str, labels_csv: str | None = None, on_bad_image: str = "error",
           progress: bool = False, schemes: dict[str, dict] | None = None, n_folds: int = 2,
           ) -> tuple[list[dict], list[str], dict[str, list[str]]]:
    """Discover, decode and hash every image; returns (image table rows, skipped-file messages,
    ignored files by kind as :func:`discover` returns them).

    Byte-identical files under one label are put in one group (so they never straddle folds);
    byte-identical files under two labels are an error. With `schemes` ({name: mapping}) the images are
    also checked against each scheme as :func:`label_for_scheme` does with `n_folds`. Every problem of
    every kind (labels CSV, files, pixels, duplicates, schemes) is raised in one InputError.
    """
    from tqdm import tqdm

    rows, ignored, problems = _discover(Path(data_dir), layout, labels_csv)
    skipped, good = [], []
    for row in tqdm(rows, desc="reading images", unit="img", disable=not progress):
        path = Path(row["path"])
        try:
            width, height, depth = probe(path)
        except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError, SyntaxError) as exc:
            message = f"{path}: unreadable or truncated ({type(exc).__name__}: {exc}); re-export or remove it"
            (skipped if on_bad_image == "skip" else problems).append(message)
            continue
        row.update(width=width, height=height, bit_depth=depth, sha256=sha256_of(path))
        good.append(row)
    problems += _group_duplicates(good)
    if rows and not good:
        problems.append(f"{data_dir}: every image was unreadable")
    for name, mapping in (schemes or {}).items() if good else ():
        try:
            label_for_scheme(good, mapping, n_folds, scheme_name=name)
        except InputError as exc:
            problems += exc.problems
    if problems:
        raise InputError(problems)
    return good, skipped, ignored


def _group_duplicates(rows: list[dict]) -> list[str]:
    """Put byte-identical files of one label in one group; returns the problems (identical files, two labels)."""
    by_hash = defaultdict(list)
    for row in rows:
        by_hash[row["sha256"]].append(row)
    problems = []
    for same in by_hash.values():
        if len(same) < 2:
            continue
        labels = {r["source_label"] for r in same}
        if len(labels) > 1:
            listing = ", ".join(f"{r['path']} ({r['source_label']})" for r in same)
            problems.append(f"byte-identical images carry different labels: {listing}; "
                            "keep one copy with the right label")
            continue
        # Merge every group that any duplicate belongs to into one, so the union is transitive.
        merged = min(r["group"] for r in same)
        old = {r["group"] for r in same}
        for r in rows:
            if r["group"] in old:
                r["group"] = merged
    return problems


def label_for_scheme(images: list[dict], mapping: dict[str, str | None], n_folds: int,
                     scheme_name: str = "the scheme") -> tuple[list[dict], dict[str, int]]:
    """Attach a class to each image under a scheme; returns (labelled rows, excluded counts by label).

    Raises InputError for labels the scheme does not know, for classes of the scheme that no image
    belongs to (which would otherwise quietly make it a scheme with fewer classes) and for classes
    with fewer distinct groups than cross-validation folds.
    """
    problems, excluded, labelled = [], defaultdict(int), []
    for row in images:
        label = row["source_label"]
        if label not in mapping:
            problems.append(f"{row['path']}: label '{label}' is not in the class scheme (known: "
                            f"{sorted(mapping)}); fix the label or add it to a custom scheme")
            continue
        cls = mapping[label]
        if cls is None:
            excluded[label] += 1
            continue
        labelled.append({**row, "class": cls})
    if problems:
        raise InputError(problems)
    if not labelled:
        raise InputError(["no image belongs to a class of this scheme (empty dataset after labelling)"])
    groups = defaultdict(set)
    for row in labelled:
        groups[row["class"]].add(row["group"])
    empty_source_labels = []
    for cls in scheme_classes(mapping):
        if not groups[cls]:
            sources = sorted(label for label, target in mapping.items() if target == cls)
            empty_source_labels += sources
            problems.append(f"class '{cls}' of {scheme_name} has no image (no image is labelled "
                            f"{' or '.join(sources)}); add images with that label, fix the labels "
                            "(sub-folder names or data.labels_csv), or leave the class out (a scheme "
                            f"in custom_schemes without it), or drop {scheme_name} from schemes")
        elif len(groups[cls]) < n_folds:
            problems.append(f"class '{cls}' has {len(groups[cls])} independent image(s) (groups) but "
                            f"cv.folds is {n_folds}; add images or lower cv.folds")
    if excluded.get("NC") and set(empty_source_labels) & set(NC_SUBCLASSES):
        # The 8-class case: NIOSH file names say only "NonCNT"; the sub-class must come from a CSV.
        problems.append(f"{excluded['NC']} image(s) are labelled NC (Non-CNT) without a sub-class, so "
                        f"{scheme_name} leaves them out; give each its sub-class "
                        f"({', '.join(NC_SUBCLASSES)}) in data.labels_csv (rows 'path,label', e.g. "
                        f"'NonCNT-0001.tif,GS'), or drop {scheme_name} from schemes "
                        "(5class keeps them as NC)")
    if problems:
        raise InputError(problems)
    return labelled, dict(excluded)
