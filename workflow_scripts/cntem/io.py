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

from .schemes import canonical_label

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
IMAGE_COLUMNS = ["id", "path", "source_label", "group", "width", "height", "bit_depth", "sha256"]
# NIOSH Dataverse doi:10.7910/DVN/5O0SF7 names: CNT-Cluster-0001.tif ... NonCNT-1195.tif
NIOSH_NAME = re.compile(r"^(CNT-Cluster|CNT-Fiber|CNT-MatrixSurface|CNT-Matrix|NonCNT)-(\d+)$", re.I)
# Percentiles used to map 16-bit (and float) micrographs onto 0-255: robust to hot/dead pixels.
HIGH_DEPTH_PERCENTILES = (0.5, 99.5)


class InputError(ValueError):
    """Bad input data; the message lists every offending file and how to fix it."""

    def __init__(self, problems: list[str], header: str = "the input data has problems"):
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{header} ({len(problems)}):\n{listing}")


# ----------------------------------------------------------------------------- tables
def write_table(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """Write rows as a TSV (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, delimiter="\t", extrasaction="ignore",
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
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, HIGH_DEPTH_PERCENTILES)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
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


def read_labels_csv(path: str | os.PathLike, data_dir: Path) -> tuple[dict, dict, list[str]]:
    """Labels CSV (``path,label[,group]``; header optional) -> ({rel: label}, {rel: group}, problems).

    Paths are relative to the data folder; a bare file name is accepted when it is unique.
    """
    labels, groups, problems = {}, {}, []
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    for lineno, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[1].strip():
            problems.append(f"{path}: row {lineno} {row!r} needs 'path,label[,group]'")
            continue
        rel = Path(row[0].strip()).as_posix()
        labels[rel] = canonical_label(row[1])
        if len(row) > 2 and row[2].strip():
            groups[rel] = row[2].strip()
    return labels, groups, problems


def discover(data_dir: str | os.PathLike, layout: str, labels_csv: str | None = None) -> list[dict]:
    """Every image file under ``data_dir`` with its source label and group (no pixel reads).

    Returns rows with ``id`` (the path relative to data_dir), ``path``, ``source_label`` and
    ``group``. Raises InputError for an empty folder, unsupported files, unlabelled images and
    labels-CSV rows that name no file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError([f"{data_dir}: no such folder; set data.dir in the config to your image folder"])
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    csv_labels, csv_groups, problems = ({}, {}, [])
    if labels_csv:
        csv_labels, csv_groups, problems = read_labels_csv(labels_csv, data_dir)
    by_name = defaultdict(list)
    for f in files:
        by_name[f.name].append(f.relative_to(data_dir).as_posix())

    def resolve(rel_in_csv: str) -> str | None:
        if (data_dir / rel_in_csv).is_file():
            return rel_in_csv
        hits = by_name.get(Path(rel_in_csv).name, [])
        return hits[0] if len(hits) == 1 else None

    labels_by_rel, groups_by_rel = {}, {}
    for rel_in_csv, label in csv_labels.items():
        rel = resolve(rel_in_csv)
        if rel is None:
            problems.append(f"{labels_csv}: '{rel_in_csv}' is not a file under {data_dir}; fix the path "
                            "(relative to data.dir) or remove the row")
            continue
        labels_by_rel[rel] = label
        if rel_in_csv in csv_groups:
            groups_by_rel[rel] = csv_groups[rel_in_csv]

    rows = []
    for f in files:
        rel = f.relative_to(data_dir)
        rel_s = rel.as_posix()
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{f}: unsupported format '{f.suffix}'; convert it to TIFF/PNG/JPEG/BMP or "
                            "move it out of the data folder")
            continue
        label = labels_by_rel.get(rel_s) or _label_from_layout(rel, layout)
        if label is None:
            if layout == "labels":
                continue  # with layout 'labels' only the files the CSV names take part
            hint = ("put it in a class sub-folder" if layout == "folders"
                    else "name it like CNT-Fiber-0001.tif" if layout == "niosh" else "")
            problems.append(f"{f}: no label; {hint} or give it a row in the labels CSV")
            continue
        rows.append({"id": rel_s, "path": str(f.resolve()), "source_label": label,
                     "group": groups_by_rel.get(rel_s, rel_s)})
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError([f"{data_dir}: no labelled images found (layout '{layout}'); check data.dir, "
                          "data.layout and data.labels_csv"])
    return rows


def ingest(data_dir, layout: str, labels_csv: str | None = None, on_bad_image: str = "error",
           progress: bool = False) -> tuple[list[dict], list[str]]:
    """Discover, decode and hash every image; returns (image table rows, skipped-file messages).

    Byte-identical files under one label are put in one group (so they never straddle folds);
    byte-identical files under two labels are an error.
    """
    from tqdm import tqdm

    rows = discover(data_dir, layout, labels_csv)
    problems, skipped, good = [], [], []
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
    if problems:
        raise InputError(problems)
    _group_duplicates(good)
    if not good:
        raise InputError([f"{data_dir}: every image was unreadable"])
    return good, skipped


def _group_duplicates(rows: list[dict]) -> None:
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
    if problems:
        raise InputError(problems)


def label_for_scheme(images: list[dict], mapping: dict[str, str | None], n_folds: int,
                     ) -> tuple[list[dict], dict[str, int]]:
    """Attach a class to each image under a scheme; returns (labelled rows, excluded counts by label).

    Raises InputError for labels the scheme does not know and for classes with fewer distinct
    groups than cross-validation folds.
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
    for cls, members in sorted(groups.items()):
        if len(members) < n_folds:
            problems.append(f"class '{cls}' has {len(members)} independent image(s) (groups) but "
                            f"cv.folds is {n_folds}; add images or lower cv.folds")
    if problems:
        raise InputError(problems)
    return labelled, dict(excluded)
