"""Prediction on new image files with a trained :class:`~cntem.model.Model`.

Prediction classifies every file it can decode: an unreadable file is listed with its reason
(``<name>_unreadable.csv`` and the log) instead of stopping the batch, and a file with a warning
(an image far smaller than the network input) gets it in the ``note`` column.

Through the bundle's :class:`~cntem.uncertainty.Uncertainty` every micrograph gets calibrated probabilities, a
conformal prediction set and a review flag, and the sample its class shares by every estimator with intervals
(``<name>_shares.csv``), a review queue (``<name>_review.csv``), figures and a page (``<name>.html``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from . import ActionableError
from .backbone import Weights
from .io import IMAGE_SUFFIXES, write_table
from .model import Model
from .tta import GROUPS, average_over_group

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
                   progress: bool = False, averaging: str = "") -> tuple[list[dict], list[dict]]:
    """Classify `files` -> (rows, unreadable).

    rows: one per classified file, in the order given: file, predicted class, its probability, the
    probability of every class (calibrated by the model's Uncertainty), the prediction set (classes joined by ';')
    and its size, the review flag and doubt (1 - top probability), a note ('' or a warning about that file), and
    under ``raw`` the classifier's own probabilities. unreadable: file and reason for every file that could not be
    decoded; those are logged and left out of rows. A model without an Uncertainty (assembled in memory, never
    bundled) gives its own probabilities and leaves set, review and doubt empty.
    With `averaging` (a group of tta.GROUPS: rot4, d8) a file's probabilities are the mean over the file in
    every orientation of the group (tta.average_over_group), each through the same extraction and encoder.
    """
    from tqdm import tqdm

    files = [str(f) for f in files]
    rotations = GROUPS[averaging] if averaging else (0,)
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
    if averaging:
        classified, proba = average_over_group(classified, [entries[j]["rotation"] for j in kept], proba, averaging)
    rows = []
    assessed = model.uncertainty.assess(proba) if model.uncertainty is not None and len(proba) else None
    for k, (i, raw) in enumerate(zip(classified, proba)):
        p = assessed["proba"][k] if assessed else raw
        best = int(p.argmax())
        row = {"file": files[i], "class": model.classes[best], "probability": f"{p[best]:.4f}",
               **{f"p_{c}": f"{v:.4f}" for c, v in zip(model.classes, p)}, "set": "", "set_size": "", "review": "",
               "doubt": "", "note": notes.get(i, ""), "raw": tuple(float(v) for v in raw)}
        if assessed:
            members = [c for c, inside in zip(model.classes, assessed["sets"][k]) if inside]
            row.update({"set": ";".join(members), "set_size": len(members),
                        "review": "yes" if assessed["review"][k] else "no", "doubt": f"{assessed['doubt'][k]:.4f}"})
        rows.append(row)
    unreadable = [{"file": files[i], "reason": reason} for i, reason in sorted(reasons.items())]
    return rows, unreadable


def prediction_columns(classes: list[str]) -> list[str]:
    return ["file", "class", "probability", *(f"p_{c}" for c in classes), "set", "set_size", "review", "doubt", "note"]


SHARE_COLUMNS = ["estimator", "class", "share", "lower", "upper", "default", "images"]


def review_queue(rows: list[dict]) -> list[dict]:
    """The flagged rows, most doubtful first (ties: larger set first, then file name)."""
    flagged = [r for r in rows if r["review"] == "yes"]
    return sorted(flagged, key=lambda r: (-float(r["doubt"]), -int(r["set_size"]), r["file"]))


def class_shares(rows: list[dict], model: Model) -> list[dict]:
    """Every estimator's share of each class among the classified images, with its interval (the default estimator,
    chosen by the bundle's validation, first), and the images counted in each class."""
    counted = {c: sum(r["class"] == c for r in rows) for c in model.classes}
    estimates = model.uncertainty.shares(np.array([r["raw"] for r in rows]))
    estimates.sort(key=lambda r: r["default"] != "yes")  # stable: the estimators keep their order
    return [{**r, **{k: f"{r[k]:.4f}" for k in ("share", "lower", "upper")}, "images": counted[r["class"]]}
            for r in estimates]


def output_paths(out_csv) -> dict[str, Path]:
    """The predictions CSV and, beside it, ``<name>_shares.csv``, ``<name>_review.csv``, ``<name>_unreadable.csv``,
    the figures ``<name>_shares.png`` and ``<name>_review.png``, the page ``<name>.html`` and its folder of
    pictures ``<name>_files``."""
    out_csv = Path(out_csv)
    beside = lambda suffix: out_csv.with_name(out_csv.stem + suffix)  # noqa: E731
    return {"predictions": out_csv, "shares": beside("_shares.csv"), "review": beside("_review.csv"),
            "unreadable": beside("_unreadable.csv"), "shares_figure": beside("_shares.png"),
            "review_figure": beside("_review.png"), "page": beside(".html"), "page_files": beside("_files")}


def write_predictions(rows: list[dict], unreadable: list[dict], model: Model, paths: dict, title: str = "",
                      gallery_size: int = 12) -> list[dict]:
    """Everything output_paths names (each written even when empty, so none is left over from an earlier run);
    returns the share rows."""
    from . import plots
    from .quantify import ESTIMATOR_NAMES
    from .sample_report import write_page

    write_table(paths["predictions"], rows, prediction_columns(model.classes), ",")
    shares = class_shares(rows, model) if rows else []
    write_table(paths["shares"], shares, SHARE_COLUMNS, ",")
    queue = review_queue(rows)
    write_table(paths["review"], queue, prediction_columns(model.classes), ",")
    write_table(paths["unreadable"], unreadable, ["file", "reason"], ",")
    level = model.uncertainty.settings.interval_level
    title = title or Path(paths["predictions"]).stem
    plots.shares_with_intervals([{**r, **{k: float(r[k]) for k in ("share", "lower", "upper")}} for r in shares],
                                paths["shares_figure"], ESTIMATOR_NAMES, level, f"{title}: {len(rows)} micrographs")
    plots.review_gallery(queue, paths["review_figure"], gallery_size)
    write_page(paths, rows, shares, queue, unreadable, model, title)
    return shares


def require_a_classified_image(rows: list[dict], unreadable: list[dict], listing) -> None:
    """Raise NothingClassifiedError when no file could be classified (write the outputs first)."""
    if not rows:
        raise NothingClassifiedError(f"no image could be classified: all {len(unreadable)} files are unreadable "
                                     f"(listed with their reasons in {listing})")
