"""Prediction on new image files with a trained :class:`~cntem.model.Model`.

Prediction classifies every file it can decode: an unreadable file is listed with its reason
(``<name>_unreadable.csv`` and the log) instead of stopping the batch, and a file with a warning
(an image far smaller than the network input) gets it in the ``note`` column.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch

from . import ActionableError
from .backbone import Weights
from .io import IMAGE_SUFFIXES, write_table
from .model import Model
from .tta import TTA_ROTATIONS, average_over_rotations

log = logging.getLogger(__name__)


class NothingClassifiedError(ActionableError):
    """Every input file was unreadable: there is no prediction at all."""


class NoImagesError(ActionableError, FileNotFoundError):
    """The inputs name no image file: nothing to classify."""


def list_images(inputs) -> list[Path]:
    """Image files named directly or found (recursively) in folders, sorted."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise NoImagesError(f"{item}: no such image or folder; name existing image files or folders")
    if not files:
        raise NoImagesError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, inputs))}; "
                            "put the images to classify there, or name other files or folders")
    return files


def predict_images(model: Model, files, weights: Weights, device: torch.device, batch_size: int = 16,
                   progress: bool = False, rotation_averaging: bool = False) -> tuple[list[dict], list[dict]]:
    """Classify `files` -> (rows, unreadable).

    rows: one per classified file, in the order given: file, predicted class, its probability, the
    probability of every class, and a note ('' or a warning about that file). unreadable: file and
    reason for every file that could not be decoded; those are logged and left out of rows.
    With `rotation_averaging` a file's probabilities are the mean over the file and its 90/180/270-degree
    rotated copies (tta.average_over_rotations), each through the same extraction and encoder.
    """
    from tqdm import tqdm

    files = [str(f) for f in files]
    rotations = TTA_ROTATIONS if rotation_averaging else (0,)
    # A file's pixel sample is keyed by its name, as a dataset image's is by its id. Entries are
    # file-major: entry j is file j // len(rotations).
    entries = [{"id": Path(f).name, "rotation": r, "path": f} for f in files for r in rotations]
    reasons, notes = {}, {}  # by index in files
    bar = tqdm(total=len(entries), desc="predict", unit="img", disable=not progress)

    def skip_unreadable(index, reason):
        index //= len(rotations)
        if index not in reasons:  # once a file, not once a rotation
            log.warning("%s: unreadable, not classified (%s)", files[index], reason)
        reasons[index] = reason
        bar.update(1)

    def keep_note(index, note):
        index //= len(rotations)
        if index not in notes:
            log.warning("%s: %s", files[index], note)
        notes[index] = note

    x = model.encode_images(entries, weights, device, batch_size, on_unreadable=skip_unreadable, on_note=keep_note,
                            on_batch=bar.update)
    bar.close()
    kept = [j for j in range(len(entries)) if j // len(rotations) not in reasons]  # the order of the rows of x
    classified, proba = [j // len(rotations) for j in kept], model.predict_proba(x)
    if rotation_averaging:
        classified, proba = average_over_rotations(classified, [entries[j]["rotation"] for j in kept], proba)
    rows = []
    for i, p in zip(classified, proba):
        best = int(p.argmax())
        rows.append({"file": files[i], "class": model.classes[best], "probability": f"{p[best]:.4f}",
                     **{f"p_{c}": f"{v:.4f}" for c, v in zip(model.classes, p)}, "note": notes.get(i, "")})
    unreadable = [{"file": files[i], "reason": reason} for i, reason in sorted(reasons.items())]
    return rows, unreadable


def class_shares(rows: list[dict], classes: list[str]) -> list[dict]:
    """The share of each class among the classified images (what the reference code's test module reports)."""
    counts = Counter(r["class"] for r in rows)
    return [{"class": c, "images": counts.get(c, 0), "share": f"{counts.get(c, 0) / len(rows) if rows else 0:.4f}"}
            for c in classes]


def output_paths(out_csv) -> dict[str, Path]:
    """The predictions CSV and, beside it, ``<name>_shares.csv`` and ``<name>_unreadable.csv``."""
    out_csv = Path(out_csv)
    return {"predictions": out_csv, "shares": out_csv.with_name(out_csv.stem + "_shares.csv"),
            "unreadable": out_csv.with_name(out_csv.stem + "_unreadable.csv")}


def write_predictions(rows: list[dict], unreadable: list[dict], classes: list[str], predictions, shares,
                      unreadable_listing) -> None:
    """The predictions, the class shares and the unreadable files, as CSVs.

    All three are written even when empty (a header only), so none is left over from an earlier run.
    """
    write_table(predictions, rows, ["file", "class", "probability", *(f"p_{c}" for c in classes), "note"], ",")
    write_table(shares, class_shares(rows, classes), ["class", "images", "share"], ",")
    write_table(unreadable_listing, unreadable, ["file", "reason"], ",")


def require_a_classified_image(rows: list[dict], unreadable: list[dict], listing) -> None:
    """Raise NothingClassifiedError when no file could be classified (write the outputs first)."""
    if not rows:
        raise NothingClassifiedError(f"no image could be classified: all {len(unreadable)} files are unreadable "
                                     f"(listed with their reasons in {listing})")
