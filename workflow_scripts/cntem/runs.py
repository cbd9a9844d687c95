"""The one grammar of the method space: what a cross-validated run is, and its one name.

A *representation* is what a classifier sees of a micrograph: how the network saw it (the input mode) and what was
made of its hypercolumns; an early-fused one is several of them, each standardised, side by side. A *method* is a
representation with a classifier and, optionally, test-time averaging of its class probabilities over a group of
image transformations; a late-fused one combines the class probabilities of member methods (their mean, or a
combiner stacked on their out-of-fold probabilities). A *run* is a method cross-validated on one scheme
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
                ``<representation>+<representation>...``     ``squash-k50+tiles-pooled`` (early fusion: both,
                                                             standardised, concatenated)
Method          ``<representation>/<classifier>[-<avg>]``    ``squash-k50/xgboost`` (the paper's method),
                                                             ``tiles-pooled/logistic-rot4``,
                                                             ``squash-top/linear_softmax`` (the paper's baseline),
                                                             ``squash-k50+tiles-pooled/logistic`` (early fusion)
                ``<reps>/<combiner>-<classifiers>[-<avg>]``  ``squash-k50+tiles-pooled/mean-logistic`` (late
                                                             fusion: the mean of squash-k50/logistic's and
                                                             tiles-pooled/logistic's probabilities),
                                                             ``squash-k50/stack-logistic+xgboost`` (stacking)
Run             ``<scheme>/<balance>/<method>``              ``4class/rotate/squash-k50/xgboost``
=============== ============================================ =====================================================

Pure Python (no torch, no Snakemake), so the rules, the scripts and the tests share it.
"""
from __future__ import annotations

import dataclasses
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
# An early-fused representation: several of the kinds above (no top layer), standardised and concatenated.
FUSED = "fused"
# Late fusion: how member methods' class probabilities are combined (cntem.fusion).
COMBINERS = {"mean": "mean of", "stack": "stack of"}
# Test-time averaging of an image's class probabilities over a group of its transformations (cntem.tta.GROUPS).
AVERAGINGS = {"rot4": "averaged over 4 rotations", "d8": "averaged over 4 rotations and their mirror images"}

_MODE = "|".join(INPUT_MODES)
_TOKEN = "|".join(kind.token for kind in KINDS.values())
_CLASSIFIER = "|".join(CLASSIFIERS)
_COMBINER = "|".join(COMBINERS)
_AVERAGING = "|".join(AVERAGINGS)
_SINGLE = rf"(?:{_MODE})-(?:{_TOKEN})"
_CLASSIFIERS = rf"(?:{_CLASSIFIER})(?:\+(?:{_CLASSIFIER}))*"
# Regular expressions of the names (no anchors, no groups: Snakemake wildcard constraints use them as they are).
REPRESENTATION_PATTERN = rf"{_SINGLE}(?:\+{_SINGLE})*"
# The folder of a method's fold jobs under its representation's: a classifier, or a combiner of classifiers.
ESTIMATOR_PATTERN = rf"(?:(?:{_COMBINER})-)?{_CLASSIFIERS}"
LATE_ESTIMATOR_PATTERN = rf"(?:{_COMBINER})-{_CLASSIFIERS}"
METHOD_PATTERN = rf"{REPRESENTATION_PATTERN}/{ESTIMATOR_PATTERN}(?:-(?:{_AVERAGING}))?"
_REPRESENTATION_RE = re.compile(rf"(?P<mode>{_MODE})-(?P<token>{_TOKEN})")
_METHOD_RE = re.compile(rf"(?P<representation>{REPRESENTATION_PATTERN})/(?:(?P<combiner>{_COMBINER})-)?"
                        rf"(?P<classifiers>{_CLASSIFIERS})(?:-(?P<averaging>{_AVERAGING}))?")


def predictions_file(averaging: str = "") -> str:
    """The name of a fold job's predictions, plain or averaged (beside the plain ones)."""
    return f"predictions-{averaging}.tsv" if averaging else "predictions.tsv"


def kind_pattern(kind: str) -> str:
    """The pattern of the representation names of one kind (a rule's wildcard constraint); FUSED: early-fused ones."""
    if kind == FUSED:
        return rf"{_SINGLE}(?:\+{_SINGLE})+"
    return rf"(?:{_MODE})-(?:{KINDS[kind].token})"


def candidate_pattern() -> str:
    """The anchored pattern of a selection candidate: a method without the top layer or test-time averaging, fused
    ones included (config/schema.yaml's selection.candidates pattern equals it, tests/test_runs.py checks)."""
    tokens = "|".join(kind.token for kind in KINDS.values() if kind.deployable)
    single = rf"(?:{_MODE})-(?:{tokens})"
    classifier = "|".join(c for c in CLASSIFIERS if c != BASELINE_CLASSIFIER)
    return (rf"^{single}(?:\+{single})*/(?:(?:{_COMBINER})-)?(?:{classifier})(?:\+(?:{classifier}))*$")


@dataclass(frozen=True, order=True)
class Representation:
    """What a classifier sees: the input mode, the kind (vlad, pooled, top) and, for VLAD, K; or, early-fused (kind
    FUSED), several of those (`parts`) standardised and side by side, whose input mode is theirs joined by '+'."""

    input_mode: str
    kind: str
    k: int | None = None
    parts: tuple["Representation", ...] = ()

    def __post_init__(self):
        if self.kind == FUSED:
            if len(self.parts) < 2 or len(set(self.parts)) < len(self.parts):
                raise ValueError(f"early fusion of {[p.name for p in self.parts]}: two or more distinct "
                                 "representations")
            if any(p.kind in (FUSED, "top") for p in self.parts):
                raise ValueError(f"early fusion of {[p.name for p in self.parts]}: its parts are VLAD or pooled "
                                 "representations (the top layer is the baseline's, fused ones are not nested)")
            if self.input_mode != "+".join(dict.fromkeys(p.input_mode for p in self.parts)) or self.k is not None:
                raise ValueError("an early-fused representation is made by Representation.fuse")
            return
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input mode {self.input_mode!r}: not one of {', '.join(INPUT_MODES)}")
        if self.kind not in KINDS:
            raise ValueError(f"representation kind {self.kind!r}: not one of {', '.join(KINDS)}, {FUSED}")
        if (self.kind == "vlad") != (self.k is not None):
            raise ValueError(f"{self.kind}: K is given for VLAD and for VLAD only (got k={self.k})")
        if self.parts:
            raise ValueError(f"{self.kind}: only an early-fused representation has parts")

    @classmethod
    def fuse(cls, parts) -> "Representation":
        """The early fusion of `parts` (in their order): each standardised, then concatenated."""
        parts = tuple(parts)
        return cls("+".join(dict.fromkeys(p.input_mode for p in parts)), FUSED, None, parts)

    @property
    def name(self) -> str:
        if self.kind == FUSED:
            return "+".join(p.name for p in self.parts)
        return f"{self.input_mode}-{f'k{self.k}' if self.kind == 'vlad' else self.kind}"

    @classmethod
    def parse(cls, name: str) -> "Representation":
        if not re.fullmatch(REPRESENTATION_PATTERN, name):
            raise ValueError(f"{name!r} is no representation name (<input_mode>-<k<K>|pooled|top>, e.g. squash-k50, "
                             "or several joined by '+', e.g. squash-k50+tiles-pooled)")
        singles = [cls._parse_single(part) for part in name.split("+")]
        return singles[0] if len(singles) == 1 else cls.fuse(singles)

    @classmethod
    def _parse_single(cls, name: str) -> "Representation":
        match = _REPRESENTATION_RE.fullmatch(name)
        token = match["token"]
        kind = next(name for name, kind in KINDS.items() if re.fullmatch(kind.token, token))
        return cls(match["mode"], kind, int(token[1:])) if kind == "vlad" else cls(match["mode"], kind)

    @property
    def singles(self) -> tuple["Representation", ...]:
        """The representations it is made of: its parts, or itself."""
        return self.parts or (self,)

    @property
    def input_modes(self) -> tuple[str, ...]:
        """Every input mode it is computed from."""
        return tuple(dict.fromkeys(p.input_mode for p in self.singles))

    @property
    def label(self) -> str:
        """Readable name, e.g. "VLAD of hypercolumns, K=50"; fused: each part with its input mode, e.g. "VLAD of
        hypercolumns, K=50 (squash) + pooled hypercolumns (tiles)"."""
        if self.kind == FUSED:
            return " + ".join(f"{p.label} ({p.input_mode})" for p in self.parts)
        return KINDS[self.kind].label.format(k=self.k)

    @property
    def has_dictionary(self) -> bool:
        """Whether each fold fits a dictionary (and PCA) for it: a leakage check reads what it was fitted on."""
        return self.kind == "vlad"

    @property
    def encoded_file(self) -> str | None:
        """The file name of one fold's entries in this single representation; None for `top`, read from the shards,
        and for a fused one, read from its parts' files (`singles`)."""
        return None if self.kind == FUSED else KINDS[self.kind].encoded_file

    @property
    def deployable(self) -> bool:
        """Whether a model can deploy it (the baseline's top layer has no model encoder; a fused one is deployed as
        its parts' encoders, cntem.fused_model)."""
        return all(KINDS[p.kind].deployable for p in self.singles)


@dataclass(frozen=True, order=True)
class Method:
    """A representation with a classifier, and the test-time averaging of its probabilities ('' = none).

    Late fusion (`combiner` mean or stack): `classifier` is its members' classifiers joined by '+' (one for all when
    they share it), and the members (`members`) are each single representation of `representation` with its
    classifier: one representation with several classifiers, several with one, or several with as many.
    """

    representation: Representation
    classifier: str
    averaging: str = ""
    combiner: str = ""

    def __post_init__(self):
        if self.averaging and self.averaging not in AVERAGINGS:
            raise ValueError(f"averaging {self.averaging!r}: not one of {', '.join(AVERAGINGS)}")
        if self.combiner:
            self._check_late_fusion()
            return
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier {self.classifier!r}: not one of {', '.join(CLASSIFIERS)}")
        if (self.classifier == BASELINE_CLASSIFIER) != (self.representation.kind == "top"):
            raise ValueError(f"{self.representation.name}/{self.classifier}: {BASELINE_CLASSIFIER} classifies the "
                             "top layer, and the top layer only it (the paper's baseline)")

    def _check_late_fusion(self):
        name = f"{self.representation.name}/{self.combiner}-{self.classifier}"
        if self.combiner not in COMBINERS:
            raise ValueError(f"{name}: combiner {self.combiner!r}: not one of {', '.join(COMBINERS)}")
        classifiers = self.classifiers
        if any(c not in CLASSIFIERS or c == BASELINE_CLASSIFIER for c in classifiers):
            raise ValueError(f"{name}: member classifiers are of {', '.join(CLASSIFIERS[:-1])}")
        singles = self.representation.singles
        pairs = len(classifiers) == len(singles) > 1 or 1 in (len(classifiers), len(singles))
        if not pairs or len(classifiers) == len(singles) == 1 or "+".join(classifiers) != self.classifier:
            raise ValueError(f"{name}: give one representation with several classifiers, several representations "
                             "with one, or several with as many")
        if len(set(classifiers)) == 1 < len(classifiers):
            raise ValueError(f"{name}: a classifier shared by every member is named once")
        if len(set(self.members)) < len(self.members):
            raise ValueError(f"{name}: its members must differ")

    @property
    def classifiers(self) -> tuple[str, ...]:
        """A late fusion's member classifiers as named (one shared by all, or one per representation); a single
        method's classifier."""
        return tuple(self.classifier.split("+")) if self.combiner else (self.classifier,)

    @property
    def members(self) -> tuple["Method", ...]:
        """The methods a late fusion combines (with its averaging); a single method: itself."""
        if not self.combiner:
            return (self,)
        singles, classifiers = self.representation.singles, self.classifiers
        singles = singles * len(classifiers) if len(singles) == 1 else singles
        classifiers = classifiers * len(singles) if len(classifiers) == 1 else classifiers
        return tuple(Method(r, c, self.averaging) for r, c in zip(singles, classifiers))

    @property
    def fused_singles(self) -> tuple["Method", ...]:
        """The single-representation methods a fusion is compared with: a late fusion's members, an early fusion's
        parts each with its classifier; a single method: itself."""
        if self.representation.kind == FUSED and not self.combiner:
            return tuple(Method(part, self.classifier, self.averaging) for part in self.representation.parts)
        return self.members

    @classmethod
    def late(cls, combiner: str, members) -> "Method":
        """The late fusion of `members` (single-representation methods, one averaging) by `combiner`."""
        members = list(members)
        singles = list(dict.fromkeys(m.representation for m in members))
        classifiers = [m.classifier for m in members]
        if len(singles) > 1 and len(set(classifiers)) == 1:
            classifiers = classifiers[:1]
        representation = singles[0] if len(singles) == 1 else Representation.fuse([m.representation for m in members])
        method = cls(representation, "+".join(classifiers), members[0].averaging, combiner)
        if list(method.members) != members:
            raise ValueError(f"{[m.name for m in members]}: no late fusion of {combiner} (one representation with "
                             "several classifiers, several with one, or several with as many; one averaging)")
        return method

    @property
    def estimator(self) -> str:
        """What is fitted on the representation: the folder of its fold jobs below the representation's (its
        classifier, or for a late fusion the combiner and its classifiers, e.g. mean-logistic)."""
        return f"{self.combiner}-{self.classifier}" if self.combiner else self.classifier

    @property
    def name(self) -> str:
        return f"{self.representation.name}/{self.estimator}" + (f"-{self.averaging}" if self.averaging else "")

    @classmethod
    def parse(cls, name: str) -> "Method":
        match = _METHOD_RE.fullmatch(name)
        if not match:
            raise ValueError(f"{name!r} is no method name (<input_mode>-<representation>/<classifier>[-rot4|-d8], "
                             "e.g. squash-k50/xgboost; fusions: docs/method.md, \"Method names\")")
        return cls(Representation.parse(match["representation"]), match["classifiers"], match["averaging"] or "",
                   match["combiner"] or "")

    @classmethod
    def of_fold_job(cls, representation: str, estimator: str) -> "Method":
        """The plain method whose fold jobs are in a representation's folder `representation` (a name) and its
        sub-folder `estimator` (Method.estimator): a rule's wildcards."""
        return cls.parse(f"{representation}/{estimator}")

    @classmethod
    def of(cls, input_mode: str, kind: str, classifier: str, k: int | None = None, averaging: str = "") -> "Method":
        return cls(Representation(input_mode, kind, k), classifier, averaging)

    def averaged(self, averaging: str) -> "Method":
        """The same method with its probabilities averaged over `averaging`'s group (a late fusion: its members')."""
        return dataclasses.replace(self, averaging=averaging)

    @property
    def plain(self) -> "Method":
        """The method without test-time averaging: the one whose fold jobs it reads."""
        return self.averaged("")

    @property
    def is_baseline(self) -> bool:
        return self.classifier == BASELINE_CLASSIFIER

    @property
    def is_fused(self) -> bool:
        """Early or late fusion (deployed as a cntem.fused_model.FusedModel)."""
        return bool(self.combiner) or self.representation.kind == FUSED

    @property
    def deployable(self) -> bool:
        return self.representation.deployable

    @property
    def predictions_file(self) -> str:
        """The name of a fold job's predictions of this method (averaged ones beside the plain ones)."""
        return predictions_file(self.averaging)

    @property
    def label(self) -> str:
        """Readable representation, e.g. "VLAD of hypercolumns, K=50, averaged over 4 rotations"; a late fusion's
        names its combiner and its members, e.g. "mean of squash-k50/logistic + tiles-pooled/logistic"."""
        if self.combiner:
            label = f"{COMBINERS[self.combiner]} {' + '.join(m.plain.name for m in self.members)}"
        else:
            label = self.representation.label + (" (baseline)" if self.is_baseline else "")
        return f"{label}, {AVERAGINGS[self.averaging]}" if self.averaging else label

    def columns(self) -> dict:
        """The method's columns of the tables (metrics.tsv, comparison.tsv): its name and its parts (a fused
        representation: input modes joined by '+', kind fused, no K; a late fusion's classifier: its estimator)."""
        rep = self.representation
        return {"method": self.name, "input_mode": rep.input_mode, "representation": rep.kind,
                "k": "" if rep.k is None else str(rep.k), "classifier": self.estimator, "averaging": self.averaging}


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
