"""What a prediction is worth: calibrated probabilities, conformal prediction sets, review flags and class shares with
intervals, fitted on the deployed method's out-of-fold predictions, and the validation of each on held-out folds.

:class:`Uncertainty` chains :class:`~cntem.calibration.TemperatureScaling`, :class:`~cntem.conformal.ConformalSets` and
:class:`~cntem.quantify.ShareIntervals`; the model bundle carries it (``uncertainty.json``), and :func:`validate` fits
it once per held-out fold on the other folds exactly as the bundle's is fitted on all of them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .calibration import TemperatureScaling, reliability
from .conformal import ConformalSets
from .quantify import ESTIMATORS, ShareIntervals, widen, widening_factor

FILE = "uncertainty.json"
SCENARIOS = ("uniform", "dominant")  # class proportions of validation samples: uniform on the simplex; one class 60-90%


@dataclass(frozen=True)
class UncertaintySettings:
    coverage: float = 0.9
    class_conditional: bool = False
    review_threshold: float = 0.6
    bootstrap: int = 200
    interval_level: float = 0.95
    # the share of groups each bootstrap replicate holds out as a new source (one CV fold's: 1 / cv.folds)
    interval_holdout: float = 0.2
    # the default estimator: the lowest validation error among those whose intervals held the truth this often
    required_interval_coverage: float = 0.92
    validation_samples: int = 20  # per held-out fold, scenario and sample size
    sample_sizes: tuple[int, ...] = (50, 500)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "sample_sizes", tuple(self.sample_sizes))


class Uncertainty:
    """``fit(proba, y, groups)`` on raw out-of-fold probabilities (y: class indices, one row per micrograph);
    ``assess(proba)`` -> calibrated probabilities, sets and review flags; ``shares(proba)`` -> every estimator's
    shares with intervals."""

    def __init__(self, classes: list[str], settings: UncertaintySettings = UncertaintySettings(),
                 default_estimator: str = "cc"):
        self.classes, self.settings, self.default_estimator = list(classes), settings, default_estimator
        self.run_: dict = {}  # what the out-of-fold predictions came from (and the model bundle they belong to)
        # per estimator, the stretch of its bootstrap intervals the validation found needed (widening_factor)
        self.widening_: dict[str, float] = {name: 1.0 for name in ESTIMATORS}
        self.validation_: dict = {}

    def fit(self, proba: np.ndarray, y: np.ndarray, groups) -> "Uncertainty":
        s = self.settings
        self.calibrator_ = TemperatureScaling().fit(proba, y)
        calibrated = self.calibrator_.transform(proba)
        self.sets_ = ConformalSets(s.coverage, s.class_conditional).fit(calibrated, y)
        self.shares_ = ShareIntervals(len(self.classes), replicates=s.bootstrap, level=s.interval_level,
                                      holdout=s.interval_holdout, seed=s.seed).fit(calibrated, y, groups)
        return self

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        return self.calibrator_.transform(proba)

    def assess(self, proba: np.ndarray) -> dict[str, np.ndarray]:
        """Per micrograph: calibrated probabilities, prediction set (bool per class), review flag (a set of other
        than one class, or a top probability under review_threshold) and doubt (1 - top probability)."""
        calibrated = self.calibrate(proba)
        sets = self.sets_.predict(calibrated)
        top = calibrated.max(axis=1)
        return {"proba": calibrated, "sets": sets, "doubt": 1.0 - top,
                "review": (sets.sum(axis=1) != 1) | (top < self.settings.review_threshold)}

    def shares(self, proba: np.ndarray) -> list[dict]:
        """Rows estimator, class, share, lower, upper, default (the default estimator's rows 'yes')."""
        rows = []
        for name, e in self.shares_.estimate(self.calibrate(proba)).items():
            lower, upper = widen(e["lower"], e["upper"], self.widening_[name])
            rows += [{"estimator": name, "class": c, "share": float(e["shares"][j]), "lower": float(lower[j]),
                      "upper": float(upper[j]), "default": "yes" if name == self.default_estimator else "no"}
                     for j, c in enumerate(self.classes)]
        return rows

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        return {"classes": self.classes, "settings": asdict(self.settings), "default_estimator": self.default_estimator,
                "run": self.run_, "validation": self.validation_, "widening": self.widening_,
                "calibrator": self.calibrator_.to_dict(),
                "sets": self.sets_.to_dict(), "shares": self.shares_.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Uncertainty":
        u = cls(d["classes"], UncertaintySettings(**d["settings"]), d["default_estimator"])
        u.run_, u.validation_, u.widening_ = d["run"], d["validation"], d["widening"]
        u.calibrator_ = TemperatureScaling.from_dict(d["calibrator"])
        u.sets_ = ConformalSets.from_dict(d["sets"])
        u.shares_ = ShareIntervals.from_dict(d["shares"], len(u.classes))
        return u

    def save(self, folder) -> Path:
        path = Path(folder) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, folder) -> "Uncertainty":
        return cls.from_dict(json.loads((Path(folder) / FILE).read_text()))


# ---------------------------------------------------------------------- validation on held-out grouped folds
def _composition(scenario: str, present: np.ndarray, rng) -> np.ndarray:
    """Class proportions of a validation sample over the classes `present` in the held-out fold (bool (C,))."""
    shares = np.zeros(len(present))
    k = int(present.sum())
    if scenario == "uniform" or k == 1:
        shares[present] = rng.dirichlet(np.ones(k))
    else:
        dominant = rng.uniform(0.6, 0.9)
        rest = rng.dirichlet(np.ones(k - 1)) * (1 - dominant)
        order = rng.permutation(k)
        shares[np.flatnonzero(present)[order]] = np.concatenate([[dominant], rest])
    return shares


def validate(proba: np.ndarray, y: np.ndarray, groups, folds: np.ndarray, classes: list[str],
             settings: UncertaintySettings) -> dict:
    """Cross-fitted validation: per held-out fold an Uncertainty fitted on the other folds only, applied to it.

    Returns ``calibrated`` (every row's cross-fitted calibrated probabilities), ``sets`` (its prediction sets),
    ``temperatures`` per fold, and ``share_rows``: per fold, scenario, sample size and sample (drawn from the fold
    with replacement, class counts ~ Multinomial(size, composition)), each estimator's estimate, its bootstrap
    interval (boot_lower, boot_upper) and that interval widened by the factor the other folds' rows need
    (lower, upper; widen_across_folds), against the sample's true share of every class.
    """
    groups = np.asarray([str(g) for g in groups])
    calibrated, sets = np.zeros_like(proba), np.zeros(proba.shape, bool)
    temperatures, share_rows = {}, []
    for fold in np.unique(folds):
        held_out = folds == fold
        fitted = Uncertainty(classes, settings).fit(proba[~held_out], y[~held_out], groups[~held_out])
        temperatures[int(fold)] = fitted.calibrator_.temperature
        assessed = fitted.assess(proba[held_out])
        calibrated[held_out], sets[held_out] = assessed["proba"], assessed["sets"]
        fold_y, fold_proba = y[held_out], assessed["proba"]
        by_class = [np.flatnonzero(fold_y == c) for c in range(len(classes))]
        present = np.array([len(rows) > 0 for rows in by_class])
        for s_index, scenario in enumerate(SCENARIOS):
            for size in settings.sample_sizes:
                rng = np.random.default_rng([settings.seed, int(fold), s_index, size])
                for sample in range(settings.validation_samples):
                    counts = rng.multinomial(size, _composition(scenario, present, rng))
                    rows = np.concatenate([rng.choice(by_class[c], counts[c]) for c in range(len(classes))
                                           if counts[c]])
                    truth = counts / size
                    estimates = fitted.shares_.estimate(fold_proba[rows], seed=int(rng.integers(2**31)))
                    for name, e in estimates.items():
                        for j, c in enumerate(classes):
                            share_rows.append({"fold": int(fold), "scenario": scenario, "size": size,
                                               "sample": sample, "estimator": name, "class": c,
                                               "true": truth[j], "estimate": e["shares"][j],
                                               "boot_lower": e["lower"][j], "boot_upper": e["upper"][j]})
    widen_across_folds(share_rows, settings.interval_level)
    return {"calibrated": calibrated, "sets": sets, "temperatures": temperatures, "share_rows": share_rows}


def fitted_widening(share_rows: list[dict], level: float) -> dict[str, float]:
    """Per estimator, widening_factor over validation rows (their bootstrap intervals, ``boot_lower/boot_upper``)."""
    out = {}
    for name in ESTIMATORS:
        rows = [r for r in share_rows if r["estimator"] == name]
        out[name] = widening_factor(*([r[k] for r in rows] for k in ("boot_lower", "boot_upper", "true")),
                                    level) if rows else 1.0
    return out


def widen_across_folds(share_rows: list[dict], level: float) -> None:
    """Each validation row's interval (lower, upper) stretched by the factor fitted on the *other* folds' rows: the
    coverage the validation reports is that of intervals whose widening never saw their fold."""
    for fold in sorted({r["fold"] for r in share_rows}):
        factors = fitted_widening([r for r in share_rows if r["fold"] != fold], level)
        for r in (r for r in share_rows if r["fold"] == fold):
            r["lower"], r["upper"] = (float(v) for v in widen(r["boot_lower"], r["boot_upper"],
                                                               factors[r["estimator"]]))


def calibration_summary(proba: np.ndarray, calibrated: np.ndarray, y: np.ndarray, bins: int = 15) -> dict:
    """Top-label ECE (`bins` equal-width bins) and accuracy before and after calibration, on held-out folds."""
    before, after = reliability(proba, y, bins), reliability(calibrated, y, bins)
    return {"ece_before": before["ece"], "ece_after": after["ece"], "bins": bins,
            "accuracy_before": float(np.mean(proba.argmax(1) == y)),
            "accuracy_after": float(np.mean(calibrated.argmax(1) == y))}


def coverage_rows(sets: np.ndarray, y: np.ndarray, classes: list[str]) -> list[dict]:
    """Empirical coverage of held-out prediction sets, mean set size and share of singletons: overall, per class."""
    hit = sets[np.arange(len(y)), y]
    size = sets.sum(axis=1)
    rows = []
    for name, mask in [("all", np.ones(len(y), bool)), *((c, y == j) for j, c in enumerate(classes))]:
        n = int(mask.sum())
        rows.append({"class": name, "micrographs": n,
                     "coverage": float(hit[mask].mean()) if n else float("nan"),
                     "mean_set_size": float(size[mask].mean()) if n else float("nan"),
                     "singletons": float((size[mask] == 1).mean()) if n else float("nan")})
    return rows


def share_summary(share_rows: list[dict]) -> list[dict]:
    """Per estimator, scenario and sample size (and 'all' of each): mean absolute error per class, how often the
    interval held the true share, and its mean width."""
    sizes = ["all", *sorted({r["size"] for r in share_rows})]
    keys = [(e, sc, sz) for e in ESTIMATORS for sc in ("all", *SCENARIOS) for sz in sizes]
    arrays = {k: np.array([r[k] for r in share_rows]) for k in ("estimator", "scenario", "size", "true", "estimate",
                                                                "lower", "upper")}
    out = []
    for estimator, scenario, size in keys:
        mask = arrays["estimator"] == estimator
        mask &= (arrays["scenario"] == scenario) if scenario != "all" else True
        mask &= (arrays["size"] == size) if size != "all" else True
        if not mask.any():
            continue
        true, est, lo, hi = (arrays[k][mask] for k in ("true", "estimate", "lower", "upper"))
        out.append({"estimator": estimator, "scenario": scenario, "size": size,
                    "mae": float(np.abs(est - true).mean()), "interval_coverage": float(((lo <= true) & (true <= hi))
                                                                                       .mean()),
                    "mean_width": float((hi - lo).mean()), "cases": int(mask.sum())})
    return out


def choose_default(summary: list[dict], required_coverage: float) -> str:
    """The estimator of lowest error over every scenario and size among those whose intervals reached
    `required_coverage`; if none did, the lowest error of all."""
    overall = [r for r in summary if r["scenario"] == "all" and r["size"] == "all"]
    covered = [r for r in overall if r["interval_coverage"] >= required_coverage] or overall
    return min(covered, key=lambda r: (r["mae"], ESTIMATORS.index(r["estimator"])))["estimator"]


# ---------------------------------------------------------------------- the deployed run's out-of-fold predictions
def read_out_of_fold(prediction_files, classes: list[str], group_of: dict) -> dict:
    """One run's per-fold predictions.tsv (validation rows: each micrograph once, unrotated) -> ids, proba (columns
    in `classes` order), y (class indices), groups, folds."""
    from .io import read_table

    rows = [r for path in prediction_files for r in read_table(path)]
    index = {c: j for j, c in enumerate(classes)}
    return {"ids": [r["id"] for r in rows],
            "proba": np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]),
            "y": np.array([index[r["true"]] for r in rows]), "groups": [group_of[r["id"]] for r in rows],
            "folds": np.array([int(r["fold"]) for r in rows])}


def fit_and_validate(oof: dict, classes: list[str], settings: UncertaintySettings, run: dict) -> tuple[Uncertainty,
                                                                                                          dict]:
    """The cross-fitted validation of `oof` (read_out_of_fold), then the Uncertainty fitted on every fold, its
    default share estimator chosen by the validation; `run` (what the predictions came from) is recorded."""
    validation = validate(oof["proba"], oof["y"], oof["groups"], oof["folds"], classes, settings)
    summary = share_summary(validation["share_rows"])
    fitted = Uncertainty(classes, settings, choose_default(summary, settings.required_interval_coverage))
    fitted.fit(oof["proba"], oof["y"], oof["groups"])
    fitted.run_, fitted.widening_ = run, fitted_widening(validation["share_rows"], settings.interval_level)
    fitted.validation_ = {
        "micrographs": len(oof["y"]), "folds": len(np.unique(oof["folds"])),
        "calibration": {**calibration_summary(oof["proba"], validation["calibrated"], oof["y"]),
                        "temperature": fitted.calibrator_.temperature,
                        "fold_temperatures": validation["temperatures"]},
        "coverage": coverage_rows(validation["sets"], oof["y"], classes), "shares": summary}
    return fitted, validation


def write_validation(fitted: Uncertainty, validation: dict, oof: dict, paths: dict) -> None:
    """uncertainty.json into the model folder, and the validation's tables and figures (paths: uncertainty,
    calibration, coverage, shares, samples, reliability, share_figure)."""
    from . import plots
    from .io import write_table
    from .quantify import ESTIMATOR_NAMES

    fitted.save(Path(paths["uncertainty"]).parent)
    v = fitted.validation_
    calibration = v["calibration"]
    write_table(paths["calibration"], [{"stage": stage, "ece": calibration[f"ece_{stage}"],
                                        "accuracy": calibration[f"accuracy_{stage}"],
                                        "temperature": 1.0 if stage == "before" else calibration["temperature"],
                                        "micrographs": v["micrographs"], "bins": calibration["bins"]}
                                       for stage in ("before", "after")],
                ["stage", "ece", "accuracy", "temperature", "micrographs", "bins"])
    write_table(paths["coverage"], [{**r, "nominal": fitted.settings.coverage,
                                     "class_conditional": fitted.settings.class_conditional} for r in v["coverage"]],
                ["class", "micrographs", "coverage", "mean_set_size", "singletons", "nominal", "class_conditional"])
    write_table(paths["shares"], [{**r, "default": "yes" if r["estimator"] == fitted.default_estimator else "no",
                                   "widening": fitted.widening_[r["estimator"]]} for r in v["shares"]],
                ["estimator", "scenario", "size", "mae", "interval_coverage", "mean_width", "cases", "widening",
                 "default"])
    write_table(paths["samples"], validation["share_rows"], ["fold", "scenario", "size", "sample", "estimator", "class",
                                                             "true", "estimate", "boot_lower", "boot_upper", "lower",
                                                             "upper"])
    run = fitted.run_
    plots.reliability_diagram(reliability(oof["proba"], oof["y"]), reliability(validation["calibrated"], oof["y"]),
                              paths["reliability"], f"{run['scheme']}: {run['method']}, "
                              f"held-out folds (T = {calibration['temperature']:.2f} on all)")
    plots.share_validation_figure(v["shares"], paths["share_figure"], ESTIMATOR_NAMES, fitted.settings.interval_level)
