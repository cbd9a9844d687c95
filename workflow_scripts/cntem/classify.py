"""Classifiers of image representations: gradient boosting, random forest, AdaBoost, linear softmax,
logistic regression with its C chosen by an inner grouped cross-validation, and a hierarchical classifier
whose stages (the parent CNT / NC, then the class within it) are any of the others.

One class, :class:`Classifier`, wraps each of them with the same small interface (``fit`` /
``predict_proba`` / ``save`` / ``load``) and explicit settings. Cross-validation, the final model and
prediction all go through it.

Speed matters here: VLAD vectors are K x 1472 wide (73,600 at K = 50). XGBoost's histogram
method with few bins and shallow trees, its matrix quantised once per fit, and early stopping on a
group-aware slice of the *training* fold (never the validation fold) bound a fit. On a CPU a
boosting round still costs time in proportion to the columns (column sampling does not lower it),
so the fast option, `screening`, hands the trees only the columns with the largest ANOVA F on the
rows that fit them.
"""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .schemes import class_parents

# The learning libraries are imported where they are used: each of the many small jobs then
# pays only for the one it needs (xgboost and scikit-learn's ensembles take ~1.5 s each to load).

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class XGBoostSettings:
    n_estimators: int = 150
    max_depth: int = 3
    learning_rate: float = 0.2
    max_bin: int = 32
    colsample_bynode: float = 0.2
    subsample: float = 0.9
    early_stopping_rounds: int | None = 20
    early_stopping_fraction: float = 0.15
    # Fraction of the columns the trees see (the largest ANOVA F on the fitting rows); None = all, the paper's.
    screening: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class RandomForestSettings:
    n_estimators: int = 300
    max_features: str | float = "sqrt"
    seed: int = 0


@dataclass(frozen=True)
class AdaBoostSettings:
    n_estimators: int = 100
    learning_rate: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class LinearSoftmaxSettings:
    C: float = 1.0
    max_iter: int = 2000


@dataclass(frozen=True)
class LogisticSettings:
    # Candidate inverse regularisation strengths; an inner grouped CV on the training rows picks one.
    C_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
    inner_folds: int = 3
    max_iter: int = 2000
    seed: int = 0  # shuffles the groups into inner folds

    def __post_init__(self):
        # A config or model.json gives a list: as a tuple, settings compare equal however they were made.
        object.__setattr__(self, "C_grid", tuple(self.C_grid))


@dataclass(frozen=True)
class HierarchicalSettings:
    # The classifier of every stage: any name of SETTINGS but hierarchical.
    base: str = "logistic"
    # Its settings, keys as in its own config section; missing keys take that classifier's defaults.
    base_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.stage_settings()  # an unknown base or key fails here, not at the first fit

    def stage_settings(self):
        """The settings object of the base classifier each stage is."""
        if self.base == "hierarchical":
            raise ValueError("hierarchical: base must be a flat classifier, not hierarchical")
        return settings_for(self.base, self.base_settings)


# Every classifier the workflow knows, by the name configs, rules and model bundles use.
SETTINGS = {"xgboost": XGBoostSettings, "random_forest": RandomForestSettings, "adaboost": AdaBoostSettings,
            "linear_softmax": LinearSoftmaxSettings, "logistic": LogisticSettings,
            "hierarchical": HierarchicalSettings}
NAMES = tuple(SETTINGS)


def settings_for(name: str, values: dict | None = None):
    """The settings object of classifier `name` from a config section (missing keys take the defaults)."""
    if name not in SETTINGS:
        raise ValueError(f"unknown classifier {name!r}; one of {NAMES}")
    known = [f.name for f in fields(SETTINGS[name])]
    unknown = sorted(set(values or {}) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return SETTINGS[name](**(values or {}))


def cuda_device_count() -> int:
    """GPUs the CUDA driver reports (0 without a driver), without importing torch."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def xgboost_device(requested: str) -> str:
    """'cuda' when asked for (or auto) and both a GPU and a CUDA build of XGBoost are present."""
    import xgboost as xgb

    cuda_build = bool(xgb.build_info().get("USE_CUDA"))
    has_gpu = cuda_device_count() > 0
    if requested.startswith("cuda") or requested == "auto":
        if has_gpu and cuda_build:
            return requested if requested.startswith("cuda") else "cuda"
        if requested.startswith("cuda"):
            log.warning("XGBoost: CUDA requested but not available (GPU %s, CUDA build %s); using the CPU",
                        has_gpu, cuda_build)
    return "cpu"


def _early_stopping_split(y, groups, fraction, seed):
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    fit_idx, stop_idx = next(splitter.split(np.zeros(len(y)), y, groups))
    if len(set(y[fit_idx])) < len(set(y)):  # a class fell entirely into the stopping slice
        return None
    return fit_idx, stop_idx


def _screen_columns(x, y, rows, fraction) -> np.ndarray:
    """The ceil(fraction x width) columns of `x` with the largest ANOVA F between the classes of `rows`, ascending."""
    from sklearn.feature_selection import f_classif

    block = 4096  # columns per pass: only a block of the rows is copied, never the whole matrix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column (an empty VLAD cell) has no F; it ranks last
        f = np.concatenate([f_classif(x[rows, j:j + block], y[rows])[0] for j in range(0, x.shape[1], block)])
    keep = math.ceil(fraction * x.shape[1])
    return np.sort(np.argsort(-np.nan_to_num(f, nan=-1.0), kind="stable")[:keep])


def inner_splitter(y, groups, n_folds, seed):
    """Inner folds over training rows that never split a group, or None when there are fewer than 2 groups.

    Fewer folds than `n_folds` (but at least 2) when there are fewer groups. Stratified by class when
    some class has a group for every fold; otherwise (a few groups per class) plain GroupKFold.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        return None
    most_groups_of_a_class = max(len(np.unique(groups[y == c])) for c in np.unique(y))
    kind = StratifiedGroupKFold if most_groups_of_a_class >= n_folds else GroupKFold
    return kind(n_folds, shuffle=True, random_state=seed)


class Classifier:
    """One classifier (`settings` says which) over fixed `classes`; predict_proba columns follow `classes`.

    After fit, `info` holds what a report or the leakage check needs: fit seconds, the training
    ids' groups used for early stopping, the best iteration and the device; for `logistic`, the
    chosen C, the inner accuracy of each C and the inner folds used; for `hierarchical`, each
    class's parent and each stage's classes and info.
    """

    def __init__(self, settings, classes: list[str], device: str = "cpu", threads: int = 1):
        self.settings, self.classes = settings, list(classes)
        self.device, self.threads = device, threads
        self.name = next(name for name, kind in SETTINGS.items() if isinstance(settings, kind))
        self.model, self.info = None, {}

    def fit(self, x: np.ndarray, y: list[str], groups: list[str]) -> "Classifier":
        """Fit on training rows; `groups` keep the copies of one micrograph together (early stopping)."""
        y_idx = np.array([self.classes.index(c) for c in y])
        groups = np.asarray(groups)
        start = time.perf_counter()
        self.info = {}
        self.model = getattr(self, f"_fit_{self.name}")(x, y_idx, groups)
        self.info["fit_seconds"] = time.perf_counter() - start
        return self

    def _fit_xgboost(self, x, y, groups):
        import xgboost as xgb

        s = self.settings
        split = _early_stopping_split(y, groups, s.early_stopping_fraction, s.seed) if s.early_stopping_rounds else None
        fit_rows = split[0] if split else np.arange(len(y))
        # Screened on the rows that fit the trees: neither the validation fold nor the stopping slice.
        columns = _screen_columns(x, y, fit_rows, s.screening) if s.screening else None
        x = x if columns is None else x[:, columns]  # a copy `screening` as wide
        multiclass = len(self.classes) > 2
        params = {"objective": "multi:softprob" if multiclass else "binary:logistic",
                  **({"num_class": len(self.classes)} if multiclass else {}),
                  "eval_metric": "mlogloss" if multiclass else "logloss", "tree_method": "hist",
                  "max_depth": s.max_depth, "learning_rate": s.learning_rate, "max_bin": s.max_bin,
                  "colsample_bynode": s.colsample_bynode, "subsample": s.subsample, "seed": s.seed,
                  "nthread": self.threads, "device": xgboost_device(self.device)}
        # Each matrix is quantised once (into one byte per cell at <= 256 bins); the row copies handed
        # to it are freed before the first round.
        quantised = {"max_bin": s.max_bin, "nthread": self.threads}
        if split is None:
            booster = xgb.train(params, xgb.QuantileDMatrix(x, y, **quantised), s.n_estimators)
        else:
            fit_idx, stop_idx = split
            train = xgb.QuantileDMatrix(x[fit_idx], y[fit_idx], **quantised)
            stop = xgb.QuantileDMatrix(x[stop_idx], y[stop_idx], ref=train, **quantised)  # the training bins
            booster = xgb.train(params, train, s.n_estimators, evals=[(stop, "stop")],
                                early_stopping_rounds=s.early_stopping_rounds, verbose_eval=False)
            self.info["early_stopping_groups"] = sorted(set(groups[stop_idx].tolist()))
            self.info["best_iteration"] = booster.best_iteration
            booster = booster[: booster.best_iteration + 1]  # the saved model is the best one, nothing to remember
        if columns is not None:  # travels inside the model file, so a reloaded model reads full-width input
            booster.set_attr(columns=json.dumps(columns.tolist()))
        self.info["columns"] = x.shape[1]
        self.info["device"] = params["device"]
        return booster

    def _fit_random_forest(self, x, y, groups):
        from sklearn.ensemble import RandomForestClassifier

        s = self.settings
        return RandomForestClassifier(n_estimators=s.n_estimators, max_features=s.max_features, random_state=s.seed,
                                      n_jobs=self.threads).fit(x, y)

    def _fit_adaboost(self, x, y, groups):
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.tree import DecisionTreeClassifier

        s = self.settings
        return AdaBoostClassifier(DecisionTreeClassifier(max_depth=1), n_estimators=s.n_estimators,
                                  learning_rate=s.learning_rate, random_state=s.seed).fit(x, y)

    def _fit_linear_softmax(self, x, y, groups):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        s = self.settings
        return make_pipeline(StandardScaler(), LogisticRegression(C=s.C, max_iter=s.max_iter)).fit(x, y)

    def _fit_logistic(self, x, y, groups):
        """Standardisation + multinomial logistic regression; C by grouped CV inside these (training) rows."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        s = self.settings
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=s.max_iter))
        splitter = inner_splitter(y, groups, s.inner_folds, s.seed)
        splits = list(splitter.split(x, y, groups)) if splitter else []
        self.info["inner_folds"] = len(splits)
        if splitter is None:
            fallback = f"{len(np.unique(groups))} training group(s), too few for 2 inner folds"
        elif any(len(np.unique(y[train])) < 2 for train, _ in splits):
            fallback = "an inner training part holds a single class"
        else:
            fallback = None
        if fallback:
            # Nothing to choose C on: the middle of the grid (of an even one, the lower, more regularised).
            C = sorted(s.C_grid)[(len(s.C_grid) - 1) // 2]
            self.info["C_fallback"] = f"{fallback}: the middle of C_grid"
        else:
            self.info["inner_splitter"] = type(splitter).__name__
            search = GridSearchCV(pipeline, {"logisticregression__C": list(s.C_grid)}, scoring="accuracy",
                                  cv=splits, refit=False, n_jobs=self.threads).fit(x, y)
            tried = [p["logisticregression__C"] for p in search.cv_results_["params"]]
            accuracy = search.cv_results_["mean_test_score"]
            self.info["inner_accuracy"] = {f"{c:g}": float(a) for c, a in zip(tried, accuracy)}
            # Ties go to the smallest C: the strongest regularisation that does as well.
            C = min(c for c, a in zip(tried, accuracy) if np.isclose(a, accuracy.max()))
        self.info["C"] = float(C)
        return pipeline.set_params(logisticregression__C=C).fit(x, y)

    def _fit_hierarchical(self, x, y, groups):
        """Stage 1: the parent of each class (CNT or NC); stage 2: per parent, its classes, fitted on its rows only."""
        parent_of = class_parents(self.classes)
        labels = np.array(self.classes)[y]
        parents = np.array([parent_of[c] for c in labels])
        parent_stage = self._fit_stage(x, parents, groups, list(dict.fromkeys(parent_of.values())))
        class_stages = {}
        for parent in parent_stage.classes:
            rows = np.flatnonzero(parents == parent)
            class_stages[parent] = self._fit_stage(x[rows], labels[rows], groups[rows], self.classes)
        self.info["parents"] = parent_of
        self.info["stage1"] = {"classes": parent_stage.classes, **parent_stage.info}
        self.info["stage2"] = {p: {"classes": stage.classes, **stage.info} for p, stage in class_stages.items()}
        # Every stage stops early on training groups of its own: the leakage check sees them all.
        stopping = {g for stage in (parent_stage, *class_stages.values())
                    for g in stage.info.get("early_stopping_groups", [])}
        if stopping:
            self.info["early_stopping_groups"] = sorted(stopping)
        return HierarchicalModel(self.classes, parent_stage, class_stages)

    def _fit_stage(self, x, labels, groups, order):
        """A base classifier of the `labels` present (in `order`), or the single one when only one is present."""
        present = set(labels.tolist())
        choices = [c for c in order if c in present]
        if len(choices) == 1:
            return OnlyChoice(choices[0])
        return Classifier(self.settings.stage_settings(), choices, self.device, self.threads).fit(x, labels, groups)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, len(classes)) probabilities; a class absent from training gets probability 0 (XGBoost: near 0)."""
        if self.name == "xgboost":
            columns = self.model.attr("columns")
            proba = self.model.inplace_predict(x if columns is None else x[:, json.loads(columns)])
            return proba if proba.ndim == 2 else np.column_stack([1 - proba, proba])
        proba = self.model.predict_proba(x)
        if proba.shape[1] != len(self.classes):
            full = np.zeros((len(x), len(self.classes)))
            full[:, self.model.classes_] = proba
            proba = full
        return proba

    def save(self, path_stem) -> str:
        """XGBoost in its own binary JSON model format (screened columns included), scikit-learn models and
        hierarchical stages with joblib; returns the path."""
        import joblib

        if self.name == "xgboost":
            path = f"{path_stem}.ubj"
            self.model.save_model(path)
        else:
            path = f"{path_stem}.joblib"
            joblib.dump(self.model, path)
        return path

    def describe(self) -> dict:
        return {"classifier": self.name, "settings": asdict(self.settings), "classes": self.classes}

    @classmethod
    def load(cls, path, description: dict) -> "Classifier":
        """A classifier saved with save(), given what describe() said of it."""
        import joblib
        import xgboost as xgb

        classifier = cls(settings_for(description["classifier"], description["settings"]), description["classes"])
        if classifier.name == "xgboost":
            classifier.model = xgb.Booster(model_file=str(path))
        else:
            classifier.model = joblib.load(path)
        return classifier


class OnlyChoice:
    """A stage of a hierarchical classifier with one choice (e.g. a parent of one class): probability 1."""

    def __init__(self, choice: str):
        self.classes, self.info = [choice], {}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 1))


class HierarchicalModel:
    """The fitted stages of a `hierarchical` Classifier: P(class) = P(parent) x P(class | parent).

    `parent_stage` gives the probabilities of its `classes` (the parents seen in training);
    `class_stages[parent]` those of that parent's classes. Columns of predict_proba follow `classes`;
    a class absent from training gets 0.
    """

    def __init__(self, classes: list[str], parent_stage, class_stages: dict):
        self.classes, self.parent_stage, self.class_stages = list(classes), parent_stage, class_stages

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        parent_proba = self.parent_stage.predict_proba(x)
        proba = np.zeros((len(x), len(self.classes)))
        for j, parent in enumerate(self.parent_stage.classes):
            stage = self.class_stages[parent]
            columns = [self.classes.index(c) for c in stage.classes]
            proba[:, columns] = parent_proba[:, [j]] * stage.predict_proba(x)
        return proba


PREDICTION_COLUMNS = ["id", "fold", "true", "predicted", "confidence"]


def timed_predict_proba(classifier: Classifier, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Class probabilities and the seconds they took."""
    start = time.perf_counter()
    proba = classifier.predict_proba(x)
    return proba, time.perf_counter() - start


def prediction_rows(ids, folds, y_true, proba, classes) -> list[dict]:
    rows = []
    for i, fold, t, p in zip(ids, folds, y_true, proba):
        best = int(np.argmax(p))
        rows.append({"id": i, "fold": fold, "true": t, "predicted": classes[best], "confidence": f"{p[best]:.6f}",
                     **{f"p_{c}": f"{v:.6f}" for c, v in zip(classes, p)}})
    return rows
