"""A trained model bundle (dictionary + classifier + provenance) and prediction on new images.

A bundle is a folder: ``model.json`` (classes, K, classifier, weights name and sha256, taps,
extraction settings, the config), ``dictionary.h5`` and the classifier in its own format
(XGBoost ``.ubj`` or a scikit-learn ``.joblib``).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .backbone import Weights
from .classify import Classifier
from .dictionary import Dictionary
from .hypercolumns import ExtractionSettings, HypercolumnNet, iter_hypercolumns
from .io import IMAGE_SUFFIXES
from .vlad import encode_descriptors

log = logging.getLogger(__name__)


class ModelMismatchError(ValueError):
    """The bundle was trained on other features than the ones requested now."""


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
                   progress: bool = False) -> list[dict]:
    """Rows: file, predicted class, its probability, and the probability of every class."""
    from tqdm import tqdm

    bundle.check_compatible(weights)
    settings = ExtractionSettings(**{**bundle.settings.__dict__, "batch_size": batch_size})
    net = HypercolumnNet(weights, settings.taps, device)
    centroids = torch.from_numpy(bundle.dictionary.centroids).to(device)
    pca = [None, None]
    if bundle.dictionary.pca_components is not None:
        pca = [torch.from_numpy(bundle.dictionary.pca_mean).to(device),
               torch.from_numpy(bundle.dictionary.pca_components).to(device)]
    entries = [{"id": Path(f).name, "rotation": 0, "path": str(f)} for f in files]
    vlads = []
    bar = tqdm(total=len(entries), desc="predict", unit="img", disable=not progress)
    for cols, _, _ in iter_hypercolumns(entries, net, weights, settings, device, workers=0):
        x = torch.from_numpy(cols).to(device).float()
        vlads.append(encode_descriptors(x, centroids, *pca, bundle.meta["power_norm"]).cpu().numpy())
        bar.update(len(cols))
    bar.close()
    proba = bundle.classifier.predict_proba(np.concatenate(vlads))
    classes = bundle.meta["classes"]
    rows = []
    for f, p in zip(files, proba):
        best = int(np.argmax(p))
        rows.append({"file": str(f), "class": classes[best], "probability": f"{p[best]:.4f}",
                     **{f"p_{c}": f"{v:.4f}" for c, v in zip(classes, p)}})
    return rows


def class_shares(rows: list[dict], classes: list[str]) -> list[dict]:
    """The share of each class among the predictions (what the reference code's test module reports)."""
    counts = Counter(r["class"] for r in rows)
    return [{"class": c, "images": counts.get(c, 0), "share": f"{counts.get(c, 0) / len(rows):.4f}"} for c in classes]


def write_predictions(rows: list[dict], classes: list[str], out_csv) -> Path:
    """predictions CSV plus ``<name>_shares.csv`` beside it; returns the shares path."""
    out_csv = Path(out_csv)
    write_table_csv(out_csv, rows, ["file", "class", "probability"] + [f"p_{c}" for c in classes])
    shares = out_csv.with_name(out_csv.stem + "_shares.csv")
    write_table_csv(shares, class_shares(rows, classes), ["class", "images", "share"])
    return shares


def write_table_csv(path, rows, columns) -> None:
    import csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
