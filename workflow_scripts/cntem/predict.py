"""A trained model bundle (dictionary + classifier + provenance) and prediction on new images.

A bundle is a folder: ``model.json`` (classes, K, classifier, weights name and sha256, input
convention, taps, extraction settings, the config), ``dictionary.h5`` and the classifier in its own
format (XGBoost ``.ubj`` or a scikit-learn ``.joblib``).

Prediction classifies every file it can decode: an unreadable file is listed with its reason
(``<name>_unreadable.csv`` and the log) instead of stopping the batch, and a file with a warning
(an image far smaller than the network input) gets it in the ``note`` column.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from . import ActionableError, __version__
from .backbone import Preprocess, Weights
from .classify import Classifier
from .dictionary import Dictionary
from .hypercolumns import ExtractionSettings, HypercolumnNet, iter_hypercolumns
from .io import IMAGE_SUFFIXES
from .vlad import encode_descriptors

log = logging.getLogger(__name__)


class ModelMismatchError(ValueError):
    """The bundle was trained on other features than the ones requested now."""


class NothingClassifiedError(ActionableError):
    """Every input file was unreadable: there is no prediction at all."""


def save_bundle(out_dir, dictionary: Dictionary, classifier: Classifier, weights: Weights,
                settings: ExtractionSettings, power_norm: bool, config: dict, n_images: int) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dictionary.save(out / "dictionary.h5")
    clf_file = Path(classifier.save(out / "classifier")).name
    meta = {"format": "cntem-model-1", "cntem_version": __version__, "classes": classifier.classes,
            "classifier": classifier.name, "classifier_file": clf_file, "dictionary_file": "dictionary.h5",
            "k": dictionary.k, "power_norm": power_norm, "weights": weights.name,
            "weights_sha256": weights.sha256, "weights_random": weights.is_random,
            "preprocess": weights.describe()["preprocess"],
            "extraction": {"taps": list(settings.taps), "density": settings.density,
                           "image_size": settings.image_size, "resize": settings.resize, "seed": settings.seed},
            "trained_on_images": n_images, "config": config}
    (out / "model.json").write_text(json.dumps(meta, indent=1, default=str))
    return out / "model.json"


class Bundle:
    def __init__(self, model_dir):
        self.dir = Path(model_dir)
        meta_path = self.dir / "model.json" if self.dir.is_dir() else self.dir
        self.dir = meta_path.parent
        self.meta = json.loads(meta_path.read_text())
        self.dictionary = Dictionary.load(self.dir / self.meta["dictionary_file"])
        self.classifier = Classifier.load(self.meta["classifier"], str(self.dir / self.meta["classifier_file"]),
                                          self.meta["classes"])
        ex = self.meta["extraction"]
        self.settings = ExtractionSettings(tuple(ex["taps"]), ex["density"], ex["image_size"], ex["resize"], ex["seed"])
        pre = json.loads(self.meta["preprocess"])
        self.preprocess = Preprocess(pre["name"], pre["scale"], tuple(pre["mean"]), tuple(pre["std"]))

    def check_compatible(self, weights: Weights, taps=None) -> None:
        """Refuse features other than the bundle's: other weights or other taps."""
        problems = []
        if weights.sha256 != self.meta["weights_sha256"]:
            problems.append(f"weights {weights.name} (sha256 {weights.sha256[:12]}...) differ from the model's "
                            f"{self.meta['weights']} (sha256 {self.meta['weights_sha256'][:12]}...)")
        if taps is not None and list(taps) != list(self.settings.taps):
            problems.append(f"taps {list(taps)} differ from the model's {list(self.settings.taps)}")
        if problems:
            raise ModelMismatchError(f"model {self.dir} was trained on other features: " + "; ".join(problems)
                                     + ". Use the model's weights and taps, or train a new model (target 'model').")

    def with_training_input(self, weights: Weights) -> Weights:
        """The model's weights with the input convention the model was trained with.

        The sha256 covers the tensors only; the convention (how pixels become network input) comes
        from where the weights were loaded, and a ``.pth`` copied without its ``.json`` sidecar is
        taken to follow torchvision's. Features computed with another convention than the model's
        are meaningless to its dictionary and classifier, so for the model's own tensors
        (check_compatible first) the recorded convention is used, with a warning saying what differed.
        """
        if weights.preprocess == self.preprocess:
            return weights
        log.warning("weights %s: their input convention %s differs from %s, the one model %s was trained with; "
                    "the tensors are the model's (sha256 %s...), so the model's convention is used. A .pth "
                    "without its .json sidecar is assumed to follow torchvision's convention: copy the sidecar "
                    "with the weights to silence this", weights.name, describe_preprocess(weights.preprocess),
                    describe_preprocess(self.preprocess), self.dir, weights.sha256[:12])
        return dataclasses.replace(weights, preprocess=self.preprocess)


def describe_preprocess(pre: Preprocess) -> str:
    return f"'{pre.name}' (pixel x {pre.scale:g}, minus mean {list(pre.mean)}, over std {list(pre.std)})"


def list_images(inputs) -> list[Path]:
    """Image files named directly or found (recursively) in folders, sorted."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image or folder")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {list(map(str, inputs))}")
    return files


def predict_images(bundle: Bundle, files, weights: Weights, device: torch.device, batch_size: int = 16,
                   progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Classify `files` -> (rows, unreadable).

    rows: one per classified file, in the order given: file, predicted class, its probability, the
    probability of every class, and a note ('' or a warning about that file). unreadable: file and
    reason for every file that could not be decoded; those are logged and left out of rows.
    """
    from tqdm import tqdm

    bundle.check_compatible(weights)
    weights = bundle.with_training_input(weights)
    settings = ExtractionSettings(**{**bundle.settings.__dict__, "batch_size": batch_size})
    net = HypercolumnNet(weights, settings.taps, device)
    centroids = torch.from_numpy(bundle.dictionary.centroids).to(device)
    pca = [None, None]
    if bundle.dictionary.pca_components is not None:
        pca = [torch.from_numpy(bundle.dictionary.pca_mean).to(device),
               torch.from_numpy(bundle.dictionary.pca_components).to(device)]
    files = [str(f) for f in files]
    entries = [{"id": Path(f).name, "rotation": 0, "path": f} for f in files]
    reasons, notes = {}, {}  # by index in files
    bar = tqdm(total=len(entries), desc="predict", unit="img", disable=not progress)

    def skip_unreadable(index, reason):
        log.warning("%s: unreadable, not classified (%s)", files[index], reason)
        reasons[index] = reason
        bar.update(1)

    def keep_note(index, note):
        log.warning("%s: %s", files[index], note)
        notes[index] = note

    vlads = []
    for cols, _, _ in iter_hypercolumns(entries, net, weights, settings, device, workers=0,
                                        on_unreadable=skip_unreadable, on_note=keep_note):
        x = torch.from_numpy(cols).to(device).float()
        vlads.append(encode_descriptors(x, centroids, *pca, bundle.meta["power_norm"]).cpu().numpy())
        bar.update(len(cols))
    bar.close()
    classified = [i for i in range(len(files)) if i not in reasons]  # the order of the VLAD rows
    proba = bundle.classifier.predict_proba(np.concatenate(vlads)) if vlads else []
    classes = bundle.meta["classes"]
    rows = []
    for i, p in zip(classified, proba):
        best = int(np.argmax(p))
        rows.append({"file": files[i], "class": classes[best], "probability": f"{p[best]:.4f}",
                     **{f"p_{c}": f"{v:.4f}" for c, v in zip(classes, p)}, "note": notes.get(i, "")})
    unreadable = [{"file": files[i], "reason": reason} for i, reason in sorted(reasons.items())]
    return rows, unreadable


def class_shares(rows: list[dict], classes: list[str]) -> list[dict]:
    """The share of each class among the classified images (what the reference code's test module reports)."""
    counts = Counter(r["class"] for r in rows)
    return [{"class": c, "images": counts.get(c, 0), "share": f"{counts.get(c, 0) / len(rows) if rows else 0:.4f}"}
            for c in classes]


def write_predictions(rows: list[dict], unreadable: list[dict], classes: list[str], out_csv) -> dict[str, Path]:
    """The predictions CSV, and beside it ``<name>_shares.csv`` and ``<name>_unreadable.csv``.

    All three are written even when empty (a header only), so none is left over from an earlier run.
    Returns their paths by kind: predictions, shares, unreadable.
    """
    out_csv = Path(out_csv)
    paths = {"predictions": out_csv, "shares": out_csv.with_name(out_csv.stem + "_shares.csv"),
             "unreadable": out_csv.with_name(out_csv.stem + "_unreadable.csv")}
    write_table_csv(paths["predictions"], rows, ["file", "class", "probability", *(f"p_{c}" for c in classes), "note"])
    write_table_csv(paths["shares"], class_shares(rows, classes), ["class", "images", "share"])
    write_table_csv(paths["unreadable"], unreadable, ["file", "reason"])
    return paths


def require_a_classified_image(rows: list[dict], unreadable: list[dict], listing) -> None:
    """Raise NothingClassifiedError when no file could be classified (write the outputs first)."""
    if not rows:
        raise NothingClassifiedError(f"no image could be classified: all {len(unreadable)} files are unreadable "
                                     f"(listed with their reasons in {listing})")


def write_table_csv(path, rows, columns) -> None:
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
