"""Fusion of complementary views (beyond the paper): several representations, or several methods, of the same
micrographs combined into one method (names: :mod:`cntem.runs`, ``squash-k50+tiles-pooled/logistic``,
``squash-k50+tiles-pooled/mean-logistic``, ``…/stack-logistic``).

- *Early fusion*: the representations' vectors side by side. Each column is standardised by the mean and std of the
  rows the classifier is fitted on (never the validation rows), and each representation's block divided by the
  square root of its width, so that every block weighs the same (unit total variance) whatever its width: a
  73,600-wide VLAD does not drown a 2,944-wide pooled hypercolumn. :class:`BlockStandardized` puts this in front of
  any classifier, so a fold's fit, the selection's inner fits and a stacked member all standardise on their own
  training rows.
- *Late fusion*: the members' class probabilities of each validation image, combined. ``mean``: their average.
  ``stack``: a multinomial logistic regression fitted on the members' *out-of-fold* probabilities of the training
  rows, from an inner grouped cross-validation inside the training fold (``classify.inner_splitter``: a group, an
  image with its rotated copies and twins, is never split), then applied to the members' probabilities of the
  validation images, which come from the members fitted on the whole training fold. The validation fold is never
  read to fit anything.

Kept free of torch, like the learning jobs that use it.
"""
from __future__ import annotations

import time

import numpy as np

from .classify import inner_splitter, prediction_rows
from .encoded import load_encoded


def load_encoded_parts(paths, splits=None) -> tuple[dict, list[int]]:
    """The splits of one fold in a (fused) representation from its parts' encoded files (``encoded.load_encoded``):
    their vectors side by side, and the width of each part's block. Every part must hold the same entries in the same
    order (they are encodings of one plan)."""
    parts = [load_encoded(path, splits)[0] for path in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        for name, split in first.items():
            if (split["ids"] != part[name]["ids"] or split["y"] != part[name]["y"]
                    or not np.array_equal(split["rotations"], part[name]["rotations"])):
                raise ValueError(f"{path}: split {name} holds other entries than {paths[0]}'s; the parts of a fused "
                                 "representation must be encodings of the same fold")
    fused = {name: {**split, "X": np.concatenate([part[name]["X"] for part in parts], axis=1)}
             for name, split in first.items()}
    return fused, [part[next(iter(first))]["X"].shape[1] for part in parts]


class BlockStandardized:
    """A classifier fitted on standardised blocks of columns (early fusion): ``fit`` learns each column's mean and
    std on the fitting rows, scales each block to unit total variance (``1 / sqrt(width)``), then fits `classifier`;
    ``predict_proba`` applies the same scaling. The interface of :class:`~cntem.classify.Classifier` (``classes``,
    ``info``, ``name``)."""

    def __init__(self, classifier, blocks: list[int]):
        self.classifier, self.blocks = classifier, [int(b) for b in blocks]

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    @property
    def name(self) -> str:
        return self.classifier.name

    @property
    def info(self) -> dict:
        return {**self.classifier.info, "standardised_blocks": self.blocks}

    def fit(self, x, y, groups) -> "BlockStandardized":
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1] != sum(self.blocks):
            raise ValueError(f"{x.shape[1]} columns, blocks of {self.blocks}")
        self.mean_ = x.mean(0)
        std = x.std(0)
        weight = np.concatenate([np.full(b, 1 / np.sqrt(b), np.float32) for b in self.blocks])
        self.scale_ = np.where(std > 0, weight / np.where(std > 0, std, 1), 0).astype(np.float32)
        self.classifier.fit(self.transform(x), y, groups)
        return self

    def transform(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean_) * self.scale_

    def predict_proba(self, x) -> np.ndarray:
        return self.classifier.predict_proba(self.transform(x))


def for_blocks(classifier, blocks: list[int]):
    """`classifier` as it classifies a representation of these blocks: standardised per block when there are
    several (early fusion), as it is otherwise (a single representation, as the paper's)."""
    return BlockStandardized(classifier, blocks) if len(blocks) > 1 else classifier


def out_of_fold_probabilities(make_classifier, x, y, groups, inner_folds: int, seed: int) -> tuple[np.ndarray, list]:
    """Each row's class probabilities from a classifier (``make_classifier()``, fresh per fold) fitted on the other
    inner folds of these rows -> (probabilities (N, classes), the inner folds as (fit rows, predicted rows)).

    The inner folds are ``classify.inner_splitter``'s (groups never split; stratified where the groups allow), so
    an image's rotated copies are predicted by a fit that saw none of them.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    splitter = inner_splitter(y, groups, inner_folds, seed)
    if splitter is None:
        raise ValueError(f"{len(set(groups))} training group(s): too few for 2 inner folds to stack on")
    folds = list(splitter.split(np.zeros(len(y)), y, groups))
    proba = None
    for fit_rows, predicted_rows in folds:
        classifier = make_classifier()
        classifier.fit(x[fit_rows], list(y[fit_rows]), list(groups[fit_rows]))
        part = classifier.predict_proba(x[predicted_rows])
        proba = np.zeros((len(y), part.shape[1])) if proba is None else proba
        proba[predicted_rows] = part
    return proba, folds


class StackCombiner:
    """The stacking combiner: a multinomial logistic regression (L2, `C`) from the members' class probabilities,
    side by side, to the class; its columns follow `classes`."""

    def __init__(self, classes: list[str], C: float = 1.0, max_iter: int = 2000, seed: int = 0):
        self.classes, self.C, self.max_iter, self.seed = list(classes), C, max_iter, seed

    def fit(self, member_proba: list[np.ndarray], y) -> "StackCombiner":
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        self.model_.fit(np.concatenate(member_proba, axis=1), list(y))
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def predict_proba(self, member_proba: list[np.ndarray]) -> np.ndarray:
        proba = np.zeros((len(member_proba[0]), len(self.classes)))
        columns = [self.classes.index(c) for c in self.model_.classes_]
        proba[:, columns] = self.model_.predict_proba(np.concatenate(member_proba, axis=1))
        return proba


def mean_probabilities(member_proba: list[np.ndarray]) -> np.ndarray:
    """Late fusion by the mean: each row's class probabilities averaged over the members, in member order."""
    return np.mean(np.stack(member_proba), axis=0)


class MeanCombiner:
    """Late fusion by the mean (nothing to fit): :func:`mean_probabilities` with StackCombiner's interface."""

    @staticmethod
    def predict_proba(member_proba: list[np.ndarray]) -> np.ndarray:
        return mean_probabilities(member_proba)


def fit_combiner(combiner: str, classes: list[str], out_of_fold: list[np.ndarray] | None, y, stack: dict):
    """A late fusion's combiner, as cross-validation, the selection and the deployed model all make it: ``mean`` a
    MeanCombiner (nothing to fit); ``stack`` a StackCombiner (`stack`: C, seed) fitted on the members' out-of-fold
    probabilities `out_of_fold` of the training rows, whose classes are `y`."""
    if combiner == "mean":
        return MeanCombiner()
    return StackCombiner(classes, stack["C"], seed=stack["seed"]).fit(out_of_fold, y)


def member_probabilities(tables: list[list[dict]], classes: list[str]) -> tuple[list, list, list[np.ndarray]]:
    """The members' prediction tables of one fold (``predictions.tsv`` rows) -> (ids, true classes, each member's
    probabilities (N, classes)). Every member must have predicted the same images in the same order."""
    first = tables[0]
    if any([r["id"] for r in t] != [r["id"] for r in first] for t in tables[1:]):
        raise ValueError("the members of a late fusion predicted different images; they must be runs of one plan")
    proba = [np.array([[float(r[f"p_{c}"]) for c in classes] for r in t]) for t in tables]
    return [r["id"] for r in first], [r["true"] for r in first], proba


def combined_rows(combiner, tables: list[list[dict]], classes: list[str], fold) -> list[dict]:
    """The prediction rows of a late fusion's `combiner` from its members' prediction tables of one fold (plain, or
    test-time averaged: the combination of the members' averaged probabilities)."""
    ids, y_true, proba = member_probabilities(tables, classes)
    return prediction_rows(ids, [fold] * len(ids), y_true, combiner.predict_proba(proba), classes)


def fit_late_fusion(combiner: str, classes: list[str], stacking: dict | None = None):
    """A late fusion's combiner of its members' probabilities -> (combiner, info): ``combiner.predict_proba(member
    probabilities)`` gives the fused probabilities; info says what was fitted on which training ids (the leakage
    check's input).

    ``mean`` fits nothing. ``stack`` (`stacking`: ``train``, each member's training rows (``X``, ``ids``, ``y``) in
    the same order; ``make``, a function per member giving a fresh classifier; ``group_of``; ``inner_folds``,
    ``seed``, ``C``): each member's out-of-fold probabilities of the training rows by an inner grouped CV
    (:func:`out_of_fold_probabilities`, the same inner folds for every member), then the :class:`StackCombiner` on
    them. Only the training rows are read.
    """
    if combiner == "mean":
        return MeanCombiner(), {"fit_seconds": 0.0, "train_ids": [], "fitted": {}}
    start = time.perf_counter()
    train = stacking["train"]
    ids, y = list(train[0]["ids"]), list(train[0]["y"])
    if any(list(t["ids"]) != ids for t in train[1:]):
        raise ValueError("the members' training rows differ; they must be encodings of the same fold")
    groups = [stacking["group_of"][i] for i in ids]
    out_of_fold = [out_of_fold_probabilities(make, t["X"], y, groups, stacking["inner_folds"], stacking["seed"])
                   for make, t in zip(stacking["make"], train)]
    model = fit_combiner(combiner, classes, [p for p, _ in out_of_fold], y, stacking)
    inner = [{"fit_ids": sorted({ids[i] for i in fit}), "predicted_ids": sorted({ids[i] for i in predicted})}
             for fit, predicted in out_of_fold[0][1]]
    fitted = {"stacking inner fits": sorted({i for fold in inner for i in fold["fit_ids"]}),
              "stacking combiner": sorted(set(ids))}
    return model, {"fit_seconds": time.perf_counter() - start, "train_ids": sorted(set(ids)), "inner_folds": inner,
                   "fitted": fitted}


def late_fused_fold(method, member_fits: list[dict], member_tables: list[list[dict]], fold,
                    stacking: dict | None = None) -> tuple[list[dict], dict, object]:
    """One fold of a late-fused `method` (cntem.runs.Method with a combiner) -> (prediction rows, fit info, the
    fitted combiner, for :func:`combined_rows` of the members' test-time averaged predictions).

    `member_fits` are its members' ``fit.json`` of the fold and `member_tables` their predictions, in member order.
    The fit info records, for the leakage check, the training ids of every member's fit (and early stopping) and of
    the stacking's inner fits and combiner (``fitted``); its fit seconds are the members' and the combiner's.
    """
    classes = member_fits[0]["classes"]
    if any(fit["classes"] != classes for fit in member_fits):
        raise ValueError(f"{method.name}: its members were fitted on other classes")
    combiner, combination = fit_late_fusion(method.combiner, classes, stacking)
    start = time.perf_counter()
    rows = combined_rows(combiner, member_tables, classes, fold)
    fitted = {}
    for member, fit in zip(method.members, member_fits):
        fitted[f"{member.name} classifier"] = fit["train_ids"]
        if "early_stopping_groups" in fit:
            fitted[f"{member.name} early stopping"] = fit["early_stopping_groups"]
    info = {"members": [m.name for m in method.members], "combiner": method.combiner, "classes": classes,
            "fit_seconds": sum(fit["fit_seconds"] for fit in member_fits) + combination["fit_seconds"],
            "combiner_fit_seconds": combination["fit_seconds"], "predict_seconds": time.perf_counter() - start,
            "n_train": max(fit["n_train"] for fit in member_fits), "train_ids": combination["train_ids"],
            "fitted": {**fitted, **combination["fitted"]}, "inner_folds": combination.get("inner_folds", []),
            "accuracy": float(np.mean([r["true"] == r["predicted"] for r in rows]))}
    return rows, info, combiner
