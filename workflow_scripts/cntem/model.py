"""The deployed model: VGG16 hypercolumns -> an image representation (encoder) -> a classifier.

:class:`Model` chains the same objects cross-validation uses (an encoder: a VladEncoder with its
VisualDictionary, the paper's, or a PooledHypercolumnEncoder; a Classifier) and knows what its features
are: the extraction settings and the weights' identity and input convention, read from the shards it
was trained on. Saved as a folder: ``model.json`` (classes, encoder with its representation, classifier,
extraction, weights, provenance), what the encoder keeps (VLAD: ``dictionary.h5``), the classifier
in its own format (XGBoost ``.ubj`` or a scikit-learn ``.joblib``) and ``uncertainty.json``: the calibration,
conformal sets and share estimators fitted on the out-of-fold predictions of the run the model deploys
(:class:`~cntem.uncertainty.Uncertainty`, rule fit_uncertainty), tied to this model.json by its sha256.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from . import ActionableError, __version__
from .backbone import Preprocess, Weights
from .classify import Classifier
from .features import ExtractionSettings
from .pooled import PooledHypercolumnEncoder
from .uncertainty import FILE as UNCERTAINTY_FILE
from .uncertainty import Uncertainty
from .vlad import VladEncoder

log = logging.getLogger(__name__)

# 6: fused models (cntem.fused_model: parts in sub-folders, a part without a classifier); 5: uncertainty.json; 4: the
# input mode; 3: XGBoost as a Booster cut at its best round, screened columns inside
FORMAT = "cntem-model-6"
# The commands messages advise (<scheme>, <your config>: the user's). The target comes first: --configfile takes every
# name after it.
TRAIN_MODEL_COMMAND = "snakemake --cores all results/model/<scheme>/model.json --configfile <your config>"
REBUILD_BUNDLE_COMMAND = "snakemake --cores all results/model/<scheme>/uncertainty.json --configfile <your config>"
# The image representations a model can use, by the name model.json records (encoder.representation).
ENCODERS = {encoder.name: encoder for encoder in (VladEncoder, PooledHypercolumnEncoder)}


class ModelMismatchError(ActionableError, ValueError):
    """The model was trained on other features than the ones requested now."""


class Model:
    """Encoder + classifier over the hypercolumns of given extraction settings and weights.

    ``fit(store, entries, labels, groups)`` fits the encoder (VLAD: its dictionary) and the classifier on
    the shard entries; ``encode_images`` represents image files through the same encoder, for ``predict_proba``.
    A part of an early-fused model (cntem.fused_model) has no classifier of its own (None).
    """

    def __init__(self, encoder: VladEncoder | PooledHypercolumnEncoder, classifier: Classifier | None):
        self.encoder, self.classifier = encoder, classifier
        self.extraction_: ExtractionSettings | None = None
        self.weights_: dict = {}  # name, sha256, random, preprocess of the weights the features came from
        self.trained_on_: dict = {}
        self.uncertainty: Uncertainty | None = None  # fitted on out-of-fold predictions of the deployed run
        self.folder_: Path | None = None  # where load() found the bundle (its validation figures are there)

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes if self.classifier is not None else []

    @classmethod
    def from_parts(cls, encoder: VladEncoder | PooledHypercolumnEncoder, classifier: Classifier, store) -> "Model":
        """A model from an encoder and a classifier already fitted on the features of `store`
        (e.g. one cross-validation fold's dictionary and classifier)."""
        model = cls(encoder, classifier)
        model.extraction_, model.weights_ = store.extraction_settings(), store.weights_identity()
        return model

    def fit(self, store, entries, labels, groups, progress: bool = False) -> "Model":
        """Fit on shard `entries` ((id, rotation) pairs) with their class `labels` and `groups`."""
        self.extraction_, self.weights_ = store.extraction_settings(), store.weights_identity()
        self.encoder.fit(store, entries, progress)
        x = self.encoder.transform_store(store, entries, progress)
        self.classifier.fit(x, labels, groups)
        self.trained_on_ = {"entries": len(entries), "images": len({image_id for image_id, _ in entries})}
        return self

    # ------------------------------------------------------------------ the features of new images
    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(**{**self.weights_["preprocess"], "mean": tuple(self.weights_["preprocess"]["mean"]),
                             "std": tuple(self.weights_["preprocess"]["std"])})

    def check_compatible(self, weights: Weights, taps=None, input_mode: str | None = None) -> None:
        """Refuse features other than the model's: other weights, taps or input mode (what the network sees)."""
        problems = []
        if weights.sha256 != self.weights_["sha256"]:
            problems.append(f"weights {weights.name} (sha256 {weights.sha256[:12]}...) differ from the model's "
                            f"{self.weights_['name']} (sha256 {self.weights_['sha256'][:12]}...)")
        if taps is not None and list(taps) != list(self.extraction_.taps):
            problems.append(f"taps {list(taps)} differ from the model's {list(self.extraction_.taps)}")
        if input_mode is not None and input_mode != self.extraction_.input_mode:
            problems.append(f"input mode {input_mode} differs from the model's {self.extraction_.input_mode} "
                            f"(max_side {self.extraction_.max_side})")
        if problems:
            raise ModelMismatchError("the model was trained on other features: " + "; ".join(problems)
                                     + ". Use the model's weights, taps and input mode, or train a model with "
                                     f"yours in the config: {TRAIN_MODEL_COMMAND}")

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
        log.warning("weights %s: their input convention %s differs from %s, the one the model was trained with; "
                    "the tensors are the model's (sha256 %s...), so the model's convention is used. A .pth "
                    "without its .json sidecar is assumed to follow torchvision's convention: copy the sidecar "
                    "with the weights to silence this", weights.name, describe_preprocess(weights.preprocess),
                    describe_preprocess(self.preprocess), weights.sha256[:12])
        return dataclasses.replace(weights, preprocess=self.preprocess)

    def encode_images(self, entries: list[dict], weights: Weights, device: torch.device, batch_size: int = 16,
                      on_unreadable=None, on_note=None, on_batch=None) -> np.ndarray:
        """Representations (N, dim) of image `entries` (dicts: id, rotation, path), computed from the files.

        The features are those extract_shard stores (same network pass, settings and pixel sampling,
        keyed by the entry's id: the float16 taps, the pooled hypercolumn) and go through the same encoder
        as in cross-validation. Entries whose file cannot be decoded go to `on_unreadable(index, reason)`
        and are left out of the rows.
        """
        from .hypercolumns import HypercolumnNet, iter_hypercolumns

        self.check_compatible(weights)
        weights = self.with_training_input(weights)
        settings = dataclasses.replace(self.extraction_, batch_size=batch_size)
        net = HypercolumnNet(weights, settings.taps, device)
        self.encoder.to(device)
        parts = []
        for batch in iter_hypercolumns(entries, net, weights, settings, device, workers=0,
                                       on_unreadable=on_unreadable, on_note=on_note):
            parts.append(self.encoder.transform_extracted(batch, settings))
            if on_batch:
                on_batch(len(batch.views))
        return np.concatenate(parts) if parts else np.empty((0, self.encoder.dim), np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(x) if len(x) else np.empty((0, len(self.classes)))

    # ------------------------------------------------------------------ storage
    def save(self, meta_path, settings: dict | None = None) -> None:
        """Write ``model.json`` at `meta_path` and what the encoder keeps and the classifier beside it.

        `settings` (e.g. the rule's params) is recorded as provenance.
        """
        meta_path = Path(meta_path)
        out = meta_path.parent
        out.mkdir(parents=True, exist_ok=True)
        encoder = self.encoder.save(out)
        classifier = None if self.classifier is None else {
            **self.classifier.describe(), "file": Path(self.classifier.save(out / "classifier")).name}
        meta = {"format": FORMAT, "cntem_version": __version__, "classes": self.classes, "encoder": encoder,
                "classifier": classifier,
                "extraction": dataclasses.asdict(self.extraction_), "weights": self.weights_,
                "trained_on": self.trained_on_, "settings": settings or {}}
        write_bundle(meta_path, meta, self.uncertainty)

    @classmethod
    def load(cls, model_dir) -> "Model":
        """A model folder (or its model.json) written by save(), or by FusedModel.save (then a FusedModel)."""
        path = Path(model_dir)
        meta_path = path / "model.json" if path.is_dir() else path
        if not meta_path.is_file():
            raise ActionableError(f"{meta_path}: no model here; give the folder the workflow wrote a model to "
                                  f"(results/model/<scheme>, by {TRAIN_MODEL_COMMAND}) or its model.json")
        text = meta_path.read_text()
        meta = json.loads(text)
        folder = meta_path.parent
        rebuild = f"rebuild the bundle with: {REBUILD_BUNDLE_COMMAND.replace('<scheme>', folder.name)}"
        if meta.get("format") != FORMAT:
            raise ActionableError(f"{meta_path}: a model of format {meta.get('format')!r}, not {FORMAT!r} (which "
                                  f"carries calibration, prediction sets and share intervals); {rebuild}")
        uncertainty_path = folder / UNCERTAINTY_FILE
        if not uncertainty_path.is_file():
            raise ActionableError(f"{folder}: no {UNCERTAINTY_FILE} beside model.json; {rebuild}")
        uncertainty = Uncertainty.load(folder)
        if uncertainty.run_.get("model_sha256") != hashlib.sha256(text.encode()).hexdigest():
            raise ActionableError(f"{uncertainty_path} was fitted for another model.json than this one; {rebuild}")
        if "fused" in meta:
            from .fused_model import FusedModel

            model = FusedModel.load(folder, meta)
        else:
            model = cls.load_part(folder, meta)
        model.uncertainty, model.folder_ = uncertainty, folder
        return model

    @classmethod
    def load_part(cls, folder, meta: dict | None = None) -> "Model":
        """The encoder and classifier saved in `folder` (its model.json, read unless given as `meta`): a bundle's
        model, or one part of a fused model's (cntem.fused_model), which has no uncertainty of its own."""
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text()) if meta is None else meta
        encoder = ENCODERS[meta["encoder"]["representation"]].load(folder, meta["encoder"])
        description = meta["classifier"]
        model = cls(encoder, None if description is None else Classifier.load(folder / description["file"], description))
        extraction = {**meta["extraction"], "taps": tuple(meta["extraction"]["taps"])}
        model.extraction_ = ExtractionSettings(**extraction)
        model.weights_, model.trained_on_ = meta["weights"], meta["trained_on"]
        return model


def write_bundle(meta_path: Path, meta: dict, uncertainty: Uncertainty | None) -> None:
    """Write a model's ``model.json`` and, when it has one, its uncertainty tied to that text by its sha256."""
    text = json.dumps(meta, indent=1, default=str)
    meta_path.write_text(text)
    if uncertainty is not None:
        uncertainty.run_ = {**uncertainty.run_, "model_sha256": hashlib.sha256(text.encode()).hexdigest()}
        uncertainty.save(meta_path.parent)


def describe_preprocess(pre: Preprocess) -> str:
    return f"'{pre.name}' (pixel x {pre.scale:g}, minus mean {list(pre.mean)}, over std {list(pre.std)})"
