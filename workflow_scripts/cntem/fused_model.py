"""The deployed fusion (beyond the paper): a fused method (:mod:`cntem.fusion`) as a model.

:class:`FusedModel` holds one :class:`~cntem.model.Model` per single representation it is made of, each with its
own encoder and the extraction (input mode) it was fitted on: an early fusion's parts (no classifier of their own;
one :class:`~cntem.fusion.BlockStandardized` classifier over their vectors side by side) or a late fusion's members
(each with its classifier; a mean or stacking combiner of their probabilities). Trained as cross-validation trains
one fold (a stacking combiner on the members' out-of-fold probabilities of an inner grouped CV over the model's
training entries), saved as a folder: ``model.json`` (the method, classes, provenance), one sub-folder per part
(``part<i>/model.json`` and what it keeps), the early head's classifier and standardisation or the late
combiner.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import __version__
from .classify import Classifier
from .fusion import BlockStandardized, fit_combiner, out_of_fold_probabilities
from .model import FORMAT, Model, write_bundle
from .runs import Method
from .uncertainty import Uncertainty


class FusedModel:
    """A fused `method` (cntem.runs.Method) over `parts` (Models of its single representations, in order): `head`, a
    BlockStandardized classifier (early fusion; its blocks set by fit), or `combiner`, of the parts' probabilities
    (late fusion; set by fit)."""

    def __init__(self, method: Method, parts: list[Model], head: BlockStandardized | None = None, combiner=None):
        self.method, self.parts, self.head, self.combiner = method, parts, head, combiner
        self.trained_on_: dict = {}
        self.uncertainty: Uncertainty | None = None  # as a Model's: fitted on the deployed run's out-of-fold predictions
        self.folder_: Path | None = None

    @property
    def classes(self) -> list[str]:
        return self.head.classes if self.head is not None else self.parts[0].classifier.classes

    @property
    def weights_(self) -> dict:
        return self.parts[0].weights_

    @property
    def dims(self) -> list[int]:
        return [part.encoder.dim for part in self.parts]

    def fit(self, stores: dict, entries, labels, groups, make_member=None, stacking: dict | None = None,
            progress: bool = False) -> "FusedModel":
        """Fit on shard `entries` of `stores` (one per input mode): every part's encoder on its mode's store; then the
        early head on the parts' vectors side by side, or each member's classifier and (stack) the combiner on their
        out-of-fold probabilities (`make_member(i)`: a fresh classifier of member i; `stacking`: inner_folds, seed,
        C)."""
        xs = []
        for part, single in zip(self.parts, self.method.fused_singles):
            store = stores[single.representation.input_mode]
            part.extraction_, part.weights_ = store.extraction_settings(), store.weights_identity()
            part.encoder.fit(store, entries, progress)
            xs.append(part.encoder.transform_store(store, entries, progress))
        if self.head is not None:
            self.head.blocks = [x.shape[1] for x in xs]
            self.head.fit(np.concatenate(xs, axis=1), labels, groups)
        else:
            for part, x in zip(self.parts, xs):
                part.classifier.fit(x, labels, groups)
            out_of_fold = [out_of_fold_probabilities(lambda i=i: make_member(i), x, labels, groups,
                                                     stacking["inner_folds"], stacking["seed"])[0]
                           for i, x in enumerate(xs)] if self.method.combiner == "stack" else None
            self.combiner = fit_combiner(self.method.combiner, self.classes, out_of_fold, labels, stacking)
        self.trained_on_ = {"entries": len(entries), "images": len({image_id for image_id, _ in entries})}
        return self

    # ------------------------------------------------------------------ the features of new images
    def check_compatible(self, weights, taps=None, input_mode: str | None = None) -> None:
        """Each part's check (Model.check_compatible); `input_mode` is the fused method's (its modes joined)."""
        from .model import ModelMismatchError

        if input_mode is not None and input_mode != self.method.representation.input_mode:
            raise ModelMismatchError(f"the model was trained on other features: input mode {input_mode} differs "
                                     f"from the model's {self.method.representation.input_mode} ({self.method.name})")
        for part in self.parts:
            part.check_compatible(weights, taps)

    def encode_images(self, entries: list[dict], weights, device, batch_size: int = 16, on_unreadable=None,
                      on_note=None, on_batch=None) -> np.ndarray:
        """Every part's representation of image `entries` (Model.encode_images, each in its input mode), side by
        side. A file unreadable for one part is unreadable for all, so the rows stay aligned."""
        parts = [part.encode_images(entries, weights, device, batch_size, on_unreadable, on_note, on_batch)
                 for part in self.parts]
        return np.concatenate(parts, axis=1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.empty((0, len(self.classes)))
        if self.head is not None:
            return self.head.predict_proba(x)
        bounds = np.cumsum([0, *self.dims])
        return self.combiner.predict_proba([part.classifier.predict_proba(x[:, a:b])
                                            for part, a, b in zip(self.parts, bounds[:-1], bounds[1:])])

    # ------------------------------------------------------------------ storage
    def save(self, meta_path, settings: dict | None = None) -> None:
        """Write ``model.json`` at `meta_path`, each part in ``part<i>/`` beside it, and the head or combiner."""
        import joblib

        meta_path = Path(meta_path)
        out = meta_path.parent
        out.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(self.parts):
            part.save(out / f"part{i}" / "model.json")
        fused = {"method": self.method.name, "parts": [f"part{i}" for i in range(len(self.parts))]}
        if self.head is not None:
            fused["classifier"] = {**self.head.classifier.describe(),
                                   "file": Path(self.head.classifier.save(out / "classifier")).name,
                                   "blocks": self.head.blocks}
            np.savez(out / "standardisation.npz", mean=self.head.mean_, scale=self.head.scale_)
        else:
            joblib.dump(self.combiner, out / "combiner.joblib")
        meta = {"format": FORMAT, "cntem_version": __version__, "classes": self.classes, "fused": fused,
                "trained_on": self.trained_on_, "settings": settings or {}}
        write_bundle(meta_path, meta, self.uncertainty)

    @classmethod
    def load(cls, folder, meta: dict) -> "FusedModel":
        """A fused model folder written by save(), given its model.json."""
        import joblib

        folder = Path(folder)
        fused = meta["fused"]
        parts = [Model.load_part(folder / name) for name in fused["parts"]]
        model = cls(Method.parse(fused["method"]), parts)
        if "classifier" in fused:
            description = fused["classifier"]
            model.head = BlockStandardized(Classifier.load(folder / description["file"], description),
                                           description["blocks"])
            standardisation = np.load(folder / "standardisation.npz")
            model.head.mean_, model.head.scale_ = standardisation["mean"], standardisation["scale"]
        else:
            model.combiner = joblib.load(folder / "combiner.joblib")
        model.trained_on_ = meta["trained_on"]
        return model


def build_fused_model(method: Method, settings: dict, taps, classes: list[str], device: str = "cpu",
                      threads: int = 1):
    """An unfitted FusedModel of `method` from train_model's `settings` (``representation_settings`` by single
    representation name, ``classifier_settings`` by classifier name, ``stack``) -> (model, make_member: a fresh
    classifier of member i, for stacking's inner fits)."""
    from .config import make_classifier, make_encoder

    def classifier(name):
        return make_classifier(name, settings["classifier_settings"][name], classes, device, threads)

    singles = method.fused_singles
    encoders = [make_encoder(m.representation, settings["representation_settings"][m.representation.name], taps,
                             device) for m in singles]
    if not method.combiner:
        return FusedModel(method, [Model(e, None) for e in encoders], head=BlockStandardized(
            classifier(method.classifier), [])), None
    parts = [Model(e, classifier(m.classifier)) for e, m in zip(encoders, singles)]
    return FusedModel(method, parts), lambda i: classifier(singles[i].classifier)

