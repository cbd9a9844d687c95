"""Classifiers on VLAD vectors (gradient boosting, random forest, AdaBoost) and the VGG16 + LS baseline.

Speed matters here: VLAD vectors are K x 1472 wide (73,600 at K = 50). XGBoost's histogram
method with few bins, per-node column sampling and shallow trees keeps a fit in seconds;
early stopping uses a group-aware slice of the *training* fold, never the validation fold.
"""
from __future__ import annotations

import logging
import time

import numpy as np

# The learning libraries are imported where they are used: each of the many small jobs then
# pays only for the one it needs (xgboost and scikit-learn's ensembles take ~1.5 s each to load).

log = logging.getLogger(__name__)

NAMES = ("xgboost", "random_forest", "adaboost", "linear_softmax")


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


class Classifier:
    """A fitted model with class names; predict_proba columns follow `classes`."""

    def __init__(self, name: str, model, classes: list[str], info: dict):
        self.name, self.model, self.classes, self.info = name, model, list(classes), info

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)

    def save(self, path_stem) -> str:
        """XGBoost in its own binary JSON model format, scikit-learn models with joblib."""
        import joblib

        if self.name == "xgboost":
            path = f"{path_stem}.ubj"
            self.model.save_model(path)
        else:
            path = f"{path_stem}.joblib"
            joblib.dump(self.model, path)
        return path

    @classmethod
    def load(cls, name: str, path: str, classes: list[str]) -> "Classifier":
        import joblib
        import xgboost as xgb

        if name == "xgboost":
            model = xgb.XGBClassifier()
            model.load_model(path)
        else:
            model = joblib.load(path)
        return cls(name, model, classes, {})


def _early_stopping_split(y, groups, fraction, seed):
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    fit_idx, stop_idx = next(splitter.split(np.zeros(len(y)), y, groups))
    if len(set(y[fit_idx])) < len(set(y)):  # a class fell entirely into the stopping slice
        return None
    return fit_idx, stop_idx


def fit(name: str, x: np.ndarray, y: list[str], groups: list[str], classes: list[str], params: dict,
        device: str = "cpu", threads: int = 1) -> Classifier:
    """Fit classifier `name` on training rows; `groups` keep copies of one micrograph together."""
    y_idx = np.array([classes.index(c) for c in y])
    groups = np.asarray(groups)
    info = {}
    start = time.perf_counter()
    if name == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier(
            n_estimators=params["n_estimators"], max_depth=params["max_depth"],
            learning_rate=params["learning_rate"], max_bin=params["max_bin"],
            colsample_bynode=params["colsample_bynode"], subsample=params["subsample"],
            tree_method="hist", device=xgboost_device(device), random_state=params["seed"],
            n_jobs=threads, eval_metric="mlogloss",
            objective="multi:softprob" if len(classes) > 2 else "binary:logistic",
            early_stopping_rounds=params.get("early_stopping_rounds"))
        split = None
        if params.get("early_stopping_rounds"):
            split = _early_stopping_split(y_idx, groups, params["early_stopping_fraction"], params["seed"])
        if split is None:
            model.set_params(early_stopping_rounds=None)
            model.fit(x, y_idx, verbose=False)
        else:
            fit_idx, stop_idx = split
            model.fit(x[fit_idx], y_idx[fit_idx], eval_set=[(x[stop_idx], y_idx[stop_idx])], verbose=False)
            info["early_stopping_groups"] = sorted(set(groups[stop_idx].tolist()))
            info["best_iteration"] = int(model.best_iteration)
        info["device"] = model.get_params()["device"]
    elif name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=params["n_estimators"], max_features=params["max_features"],
                                       random_state=params["seed"], n_jobs=threads).fit(x, y_idx)
    elif name == "adaboost":
        from sklearn.ensemble import AdaBoostClassifier
        from sklearn.tree import DecisionTreeClassifier

        model = AdaBoostClassifier(DecisionTreeClassifier(max_depth=1), n_estimators=params["n_estimators"],
                                   learning_rate=params["learning_rate"], random_state=params["seed"]).fit(x, y_idx)
    elif name == "linear_softmax":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=params["max_iter"]))
        model.fit(x, y_idx)
    else:
        raise ValueError(f"unknown classifier {name!r}; one of {NAMES}")
    info["fit_seconds"] = time.perf_counter() - start
    return Classifier(name, model, classes, info)


def predict(classifier: Classifier, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Class probabilities (N, n_classes) and the seconds it took."""
    start = time.perf_counter()
    proba = classifier.predict_proba(x)
    if proba.shape[1] != len(classifier.classes):  # a class absent from training: widen with zeros
        full = np.zeros((len(x), len(classifier.classes)))
        full[:, classifier.model.classes_] = proba
        proba = full
    return proba, time.perf_counter() - start


PREDICTION_COLUMNS = ["id", "fold", "true", "predicted", "confidence"]


def prediction_rows(ids, folds, y_true, proba, classes) -> list[dict]:
    rows = []
    for i, fold, t, p in zip(ids, folds, y_true, proba):
        best = int(np.argmax(p))
        rows.append({"id": i, "fold": fold, "true": t, "predicted": classes[best], "confidence": f"{p[best]:.6f}",
                     **{f"p_{c}": f"{v:.6f}" for c, v in zip(classes, p)}})
    return rows
