"""The one grammar of the method space: what a cross-validated run is, and its one name.

A *representation* is what a classifier sees of a micrograph: how the network saw it (the input mode) and what was
made of its hypercolumns. A *method* is a representation with a classifier and, optionally, test-time averaging of
its class probabilities over a group of image transformations. A *run* is a method cross-validated on one scheme
(class set) with one balance strategy. Every path, table, figure, selection candidate and model record names a
method by :attr:`Method.name`, and reads it back with :meth:`Method.parse`; nothing else builds or splits these
strings.

=============== ============================================ =====================================================
value           name                                         examples
=============== ============================================ =====================================================
Representation  ``<input_mode>-<kind>``                      ``squash-k50`` (VLAD of hypercolumns at K = 50),
                                                             ``tiles-pooled`` (pooled hypercolumns),
                                                             ``squash-top`` (VGG16's pooled top layer: the
                                                             paper's baseline)
Method          ``<representation>/<classifier>[-<avg>]``    ``squash-k50/xgboost`` (the paper's method),
                                                             ``tiles-pooled/logistic-rot4``,
                                                             ``squash-top/linear_softmax`` (the paper's baseline)
Run             ``<scheme>/<balance>/<method>``              ``4class/rotate/squash-k50/xgboost``
=============== ============================================ =====================================================

Pure Python (no torch, no Snakemake), so the rules, the scripts and the tests share it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# How the network sees a micrograph (hypercolumns.input_mode): the paper squashes it to image_size.
INPUT_MODES = ("squash", "center_crop", "tiles", "native")


class Kind(NamedTuple):
    """What is made of the hypercolumns: its name's token (a regular expression), readable label, the file of one
    fold's entries (None: read from the shards) and whether a model can deploy it."""

    token: str
    label: str
    encoded_file: str | None
    deployable: bool


# VLAD over a K-means dictionary (token k<K>), the pooled hypercolumn (global mean and max of every tap), VGG16's
# pooled top layer (the paper's baseline features, classified by the linear softmax only).
KINDS = {"vlad": Kind(r"k[0-9]+", "VLAD of hypercolumns, K={k}", "vlad.h5", True),
         "pooled": Kind("pooled", "pooled hypercolumns", "pooled_hypercolumns.h5", True),
         "top": Kind("top", "VGG16 pooled top layer", None, False)}
# The classifiers (cntem.classify.NAMES); linear_softmax is the paper's baseline classifier, of `top` only.
CLASSIFIERS = ("xgboost", "random_forest", "adaboost", "logistic", "hierarchical", "linear_softmax")
BASELINE_CLASSIFIER = "linear_softmax"
# Test-time averaging of an image's class probabilities over a group of its transformations (cntem.tta).
AVERAGINGS = {"rot4": "averaged over 4 rotations"}
ROTATION_AVERAGING = "rot4"

_MODE = "|".join(INPUT_MODES)
_TOKEN = "|".join(kind.token for kind in KINDS.values())
_CLASSIFIER = "|".join(CLASSIFIERS)
_AVERAGING = "|".join(AVERAGINGS)
# Regular expressions of the names (no anchors, no groups: Snakemake wildcard constraints use them as they are).
REPRESENTATION_PATTERN = rf"(?:{_MODE})-(?:{_TOKEN})"
METHOD_PATTERN = rf"{REPRESENTATION_PATTERN}/(?:{_CLASSIFIER})(?:-(?:{_AVERAGING}))?"
_REPRESENTATION_RE = re.compile(rf"(?P<mode>{_MODE})-(?P<token>{_TOKEN})")
_METHOD_RE = re.compile(rf"(?P<representation>{REPRESENTATION_PATTERN})/(?P<classifier>{_CLASSIFIER})"
                        rf"(?:-(?P<averaging>{_AVERAGING}))?")


def predictions_file(averaging: str = "") -> str:
    """The name of a fold job's predictions, plain or averaged (beside the plain ones)."""
    return f"predictions-{averaging}.tsv" if averaging else "predictions.tsv"


def kind_pattern(kind: str) -> str:
    """The pattern of the representation names of one kind (a rule's wildcard constraint)."""
    return rf"(?:{_MODE})-(?:{KINDS[kind].token})"


def candidate_pattern() -> str:
    """The anchored pattern of a selection candidate: a deployable method (config/schema.yaml's
    selection.candidates pattern equals it, tests/test_runs.py checks)."""
    tokens = "|".join(kind.token for kind in KINDS.values() if kind.deployable)
    classifiers = "|".join(c for c in CLASSIFIERS if c != BASELINE_CLASSIFIER)
    return rf"^(?:{_MODE})-(?:{tokens})/(?:{classifiers})$"


@dataclass(frozen=True, order=True)
class Representation:
    """What a classifier sees: the input mode, the kind (vlad, pooled, top) and, for VLAD, K."""

    input_mode: str
    kind: str
    k: int | None = None

    def __post_init__(self):
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input mode {self.input_mode!r}: not one of {', '.join(INPUT_MODES)}")
        if self.kind not in KINDS:
            raise ValueError(f"representation kind {self.kind!r}: not one of {', '.join(KINDS)}")
        if (self.kind == "vlad") != (self.k is not None):
            raise ValueError(f"{self.kind}: K is given for VLAD and for VLAD only (got k={self.k})")

    @property
    def token(self) -> str:
        return f"k{self.k}" if self.kind == "vlad" else self.kind

    @property
    def name(self) -> str:
        return f"{self.input_mode}-{self.token}"

    @classmethod
    def parse(cls, name: str) -> "Representation":
        match = _REPRESENTATION_RE.fullmatch(name)
        if not match:
            raise ValueError(f"{name!r} is no representation name (<input_mode>-<k<K>|pooled|top>, e.g. squash-k50)")
        token = match["token"]
        kind = next(name for name, kind in KINDS.items() if re.fullmatch(kind.token, token))
        return cls(match["mode"], kind, int(token[1:])) if kind == "vlad" else cls(match["mode"], kind)

    @property
    def label(self) -> str:
        """Readable name, e.g. "VLAD of hypercolumns, K=50"."""
        return KINDS[self.kind].label.format(k=self.k)

    @property
    def has_dictionary(self) -> bool:
        """Whether each fold fits a dictionary (and PCA) for it: a leakage check reads what it was fitted on."""
        return self.kind == "vlad"

    @property
    def encoded_file(self) -> str | None:
        """The file name of one fold's entries in this representation; None for `top`, read from the shards."""
        return KINDS[self.kind].encoded_file

    @property
    def deployable(self) -> bool:
        """Whether a model can deploy it (the baseline's top layer has no model encoder)."""
        return KINDS[self.kind].deployable


@dataclass(frozen=True, order=True)
class Method:
    """A representation with a classifier, and the test-time averaging of its probabilities ('' = none)."""

    representation: Representation
    classifier: str
    averaging: str = ""

    def __post_init__(self):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier {self.classifier!r}: not one of {', '.join(CLASSIFIERS)}")
        if (self.classifier == BASELINE_CLASSIFIER) != (self.representation.kind == "top"):
            raise ValueError(f"{self.representation.name}/{self.classifier}: {BASELINE_CLASSIFIER} classifies the "
                             "top layer, and the top layer only it (the paper's baseline)")
        if self.averaging and self.averaging not in AVERAGINGS:
            raise ValueError(f"averaging {self.averaging!r}: not one of {', '.join(AVERAGINGS)}")

    @property
    def name(self) -> str:
        return f"{self.representation.name}/{self.classifier}" + (f"-{self.averaging}" if self.averaging else "")

    @classmethod
    def parse(cls, name: str) -> "Method":
        match = _METHOD_RE.fullmatch(name)
        if not match:
            raise ValueError(f"{name!r} is no method name (<input_mode>-<representation>/<classifier>[-rot4], "
                             "e.g. squash-k50/xgboost)")
        return cls(Representation.parse(match["representation"]), match["classifier"], match["averaging"] or "")

    @classmethod
    def of(cls, input_mode: str, kind: str, classifier: str, k: int | None = None, averaging: str = "") -> "Method":
        return cls(Representation(input_mode, kind, k), classifier, averaging)

    def averaged(self, averaging: str) -> "Method":
        """The same method with its probabilities averaged over `averaging`'s group."""
        return Method(self.representation, self.classifier, averaging)

    @property
    def plain(self) -> "Method":
        """The method without test-time averaging: the one whose fold jobs it reads."""
        return Method(self.representation, self.classifier)

    @property
    def is_baseline(self) -> bool:
        return self.classifier == BASELINE_CLASSIFIER

    @property
    def predictions_file(self) -> str:
        """The name of a fold job's predictions of this method (averaged ones beside the plain ones)."""
        return predictions_file(self.averaging)

    @property
    def label(self) -> str:
        """Readable representation, e.g. "VLAD of hypercolumns, K=50, averaged over 4 rotations"."""
        label = self.representation.label + (" (baseline)" if self.is_baseline else "")
        return f"{label}, {AVERAGINGS[self.averaging]}" if self.averaging else label

    def columns(self) -> dict:
        """The method's columns of the tables (metrics.tsv, comparison.tsv): its name and its parts."""
        rep = self.representation
        return {"method": self.name, "input_mode": rep.input_mode, "representation": rep.kind,
                "k": "" if rep.k is None else str(rep.k), "classifier": self.classifier, "averaging": self.averaging}


@dataclass(frozen=True, order=True)
class Run:
    """A method cross-validated on one scheme with one balance strategy."""

    scheme: str
    balance: str
    method: Method

    @property
    def name(self) -> str:
        """``<scheme>/<balance>/<method>``: its evaluation folder under results/ and its name in the leakage check."""
        return f"{self.scheme}/{self.balance}/{self.method.name}"

    def columns(self) -> dict:
        return {"scheme": self.scheme, "balance": self.balance, **self.method.columns()}
