"""Cross-validation: one fold's fit and predictions, metrics over folds, the tidy table, the comparison of
methods, the leakage check."""
from __future__ import annotations

import json

import numpy as np

from . import ActionableError
from .classify import PREDICTION_COLUMNS, Classifier, prediction_rows, timed_predict_proba
from .folds import VAL_ROTATED
from .io import write_table
from .runs import Method
from .schemes import class_tree
from .tta import average_over_group

# A run's columns (cntem.runs.Run.columns: the method's name and its parts), then the metric's.
RUN_COLUMNS = ["scheme", "balance", "method", "input_mode", "representation", "k", "classifier", "averaging"]
TIDY_COLUMNS = [*RUN_COLUMNS, "metric", "class", "mean", "std", "repeat_std", "n_folds", "n_repeats", "config"]
# Of runs whose classes form a tree (schemes.class_tree), flat and hierarchical classifiers alike.
STAGE_METRICS = ("stage1_accuracy", "stage2_accuracy")


class LeakageError(ActionableError, RuntimeError):
    """A validation image was used to fit something of its own fold."""


def fit_and_predict_fold(classifier: Classifier, train: dict, val: dict, group_of: dict, fold) -> tuple[list, dict]:
    """Fit `classifier` on a fold's training features and predict its validation entries.

    `train` and `val` hold ``X``, ``ids`` and ``y``; `group_of` maps an id to its group (rotated
    copies and duplicates of one micrograph share one). Returns the prediction rows and what the
    fit did (times, training ids and early-stopping groups for the leakage check, accuracy).
    """
    classifier.fit(train["X"], train["y"], [group_of[i] for i in train["ids"]])
    proba, predict_seconds = timed_predict_proba(classifier, val["X"])
    rows = prediction_rows(val["ids"], [fold] * len(val["ids"]), val["y"], proba, classifier.classes)
    info = {**classifier.info, "predict_seconds": predict_seconds, "classes": classifier.classes,
            "n_train": len(train["ids"]), "train_ids": sorted(set(train["ids"])),
            "accuracy": float(np.mean([r["true"] == r["predicted"] for r in rows]))}
    return rows, info


def group_averaged_rows(classifier: Classifier, val: dict, rotated: dict, fold, group: str) -> list[dict]:
    """A fold's validation predictions with each image's class probabilities averaged over the image and its copies
    in the other orientations of `group` (test-time averaging, tta.GROUPS): fit_and_predict_fold's rows and columns,
    in `val`'s order.

    `rotated` holds the copies like `val` (``X``, ``ids``, ``rotations``: their orientations); the fitted
    `classifier` predicts both, nothing is refitted.
    """
    proba = classifier.predict_proba(np.concatenate([val["X"], rotated["X"]]))
    ids, averaged = average_over_group(list(val["ids"]) + list(rotated["ids"]),
                                       [*val["rotations"], *rotated["rotations"]], proba, group)
    return prediction_rows(ids, [fold] * len(ids), val["y"], averaged, classifier.classes)


def write_fold_predictions(rows: list[dict], classes: list[str], path) -> None:
    write_table(path, rows, PREDICTION_COLUMNS + [f"p_{c}" for c in classes])


def write_fold_outputs(rows: list[dict], info: dict, classes: list[str], predictions_path, fit_path) -> None:
    write_fold_predictions(rows, classes, predictions_path)
    with open(fit_path, "w") as fh:
        json.dump(info, fh, indent=1)


def fold_metrics(rows: list[dict], classes: list[str]) -> dict:
    """Accuracy, per-class accuracy (recall), macro-F1 and the confusion matrix of one fold, and the
    stage accuracies when the classes form a tree."""
    from sklearn.metrics import confusion_matrix, f1_score

    y_true = [r["true"] for r in rows]
    y_pred = [r["predicted"] for r in rows]
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    support = cm.sum(1)
    per_class = np.divide(np.diag(cm), support, out=np.full(len(classes), np.nan), where=support > 0)
    parent_of = class_tree(classes)
    return {"accuracy": float(np.trace(cm) / cm.sum()), "per_class": per_class.tolist(),
            "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
            "confusion": cm.tolist(), **(stage_accuracies(rows, parent_of) if parent_of else {})}


def stage_accuracies(rows: list[dict], parent_of: dict) -> dict:
    """Stage 1: the share of rows predicted in their true class's parent; stage 2: the share of those rows
    whose class is right (NaN when there are none)."""
    right_class = [r["true"] == r["predicted"] for r in rows if parent_of[r["true"]] == parent_of[r["predicted"]]]
    return {"stage1_accuracy": len(right_class) / len(rows),
            "stage2_accuracy": float(np.mean(right_class)) if right_class else float("nan")}


def spread(values, n_repeats: int = 1) -> dict:
    """Mean and std over every split of a metric's values (in split order, repeat by repeat; NaN ignored), each
    repeat's mean, and the std of those means: how much the estimate moves with the fold assignment (0 with one
    repeat)."""
    values = np.asarray(values, dtype=float)
    per_repeat = np.nanmean(values.reshape(n_repeats, -1), axis=1)
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values)), "repeats": per_repeat.tolist(),
            "repeat_std": float(per_repeat.std())}


def summarize(predictions_by_fold: list[list[dict]], fits: list[dict], classes: list[str], n_repeats: int = 1) -> dict:
    """Mean +- std over splits of every metric, its spread across repeats, the summed confusion matrix and the times.

    The splits are `n_repeats` full K-folds one after the other (folds.split_index); ``n_folds`` is K, and each
    metric's ``folds`` lists its value on every split.
    """
    folds = [fold_metrics(rows, classes) for rows in predictions_by_fold]
    acc = np.array([f["accuracy"] for f in folds])
    per_class = np.array([f["per_class"] for f in folds])
    f1 = np.array([f["macro_f1"] for f in folds])
    cm = np.sum([f["confusion"] for f in folds], axis=0)
    rows_sum = cm.sum(1, keepdims=True)
    fit_s = np.array([f["fit_seconds"] for f in fits])
    pred_s = np.array([f["predict_seconds"] for f in fits])
    stages = {name: np.array([f[name] for f in folds]) for name in STAGE_METRICS if name in folds[0]}
    return {
        "classes": classes, "n_folds": len(folds) // n_repeats, "n_repeats": n_repeats,
        "accuracy": {**spread(acc, n_repeats), "folds": acc.tolist()},
        "per_class_accuracy": {c: spread(per_class[:, i], n_repeats) for i, c in enumerate(classes)},
        "macro_f1": {**spread(f1, n_repeats), "folds": f1.tolist()},
        **{name: {**spread(v, n_repeats), "folds": v.tolist()} for name, v in stages.items()},
        "confusion": cm.tolist(),
        "confusion_normalized": np.divide(cm, rows_sum, out=np.zeros(cm.shape), where=rows_sum > 0).tolist(),
        "fit_seconds": {**spread(fit_s, n_repeats), "total": fit_s.sum()},
        "predict_seconds": {**spread(pred_s, n_repeats), "total": pred_s.sum()},
    }


def tidy_rows(run: dict, metrics: dict) -> list[dict]:
    """One row per metric (and class) of one run; `run` holds its RUN_COLUMNS (and the config digest)."""
    base = {**run, "n_folds": metrics["n_folds"], "n_repeats": metrics["n_repeats"]}
    rows = [{**base, "metric": name, "class": "all", "mean": f"{metrics[name]['mean']:.6f}",
             "std": f"{metrics[name]['std']:.6f}", "repeat_std": f"{metrics[name]['repeat_std']:.6f}"}
            for name in ("accuracy", "macro_f1", *(n for n in STAGE_METRICS if n in metrics), "fit_seconds",
                         "predict_seconds")]
    rows += [{**base, "metric": "class_accuracy", "class": c, "mean": f"{v['mean']:.6f}", "std": f"{v['std']:.6f}",
              "repeat_std": f"{v['repeat_std']:.6f}"} for c, v in metrics["per_class_accuracy"].items()]
    return rows


COMPARISON_COLUMNS = ["scheme", "rank", "method", "label", "input_mode", "representation", "k", "classifier",
                      "averaging", "balance", "accuracy_mean", "accuracy_std", "accuracy_repeat_std", "macro_f1_mean",
                      "macro_f1_std", "macro_f1_repeat_std", "fit_seconds", "n_folds", "n_repeats"]


def comparison_rows(tidy: list[dict]) -> list[dict]:
    """One row per cross-validated run of the tidy table, ranked by accuracy within its scheme.

    Accuracy and macro-F1 (mean and std over splits, std of the repeats' means) and the mean fit seconds per
    split are carried as the tidy table has them, beside the run's columns and the method's readable label. Sorted
    by scheme, then accuracy descending (then macro-F1, then the method's name and the balance, so the order is
    stable); runs of equal accuracy share a rank.
    """
    runs = {}
    for r in tidy:
        if r["class"] == "all" and r["metric"] in ("accuracy", "macro_f1", "fit_seconds"):
            runs.setdefault(tuple(r[c] for c in RUN_COLUMNS), {})[r["metric"]] = r
    rows = []
    for key, m in runs.items():
        run = dict(zip(RUN_COLUMNS, key))
        rows.append({**run, "label": Method.parse(run["method"]).label,
                     **{f"{name}_{stat}": m[name][stat] for name in ("accuracy", "macro_f1")
                        for stat in ("mean", "std", "repeat_std")},
                     "fit_seconds": m["fit_seconds"]["mean"], "n_folds": m["accuracy"]["n_folds"],
                     "n_repeats": m["accuracy"]["n_repeats"]})
    rows.sort(key=lambda r: (r["scheme"], -float(r["accuracy_mean"]), -float(r["macro_f1_mean"]), r["method"],
                             r["balance"]))
    for i, row in enumerate(rows):
        first_of_scheme = i == 0 or rows[i - 1]["scheme"] != row["scheme"]
        position = 1 if first_of_scheme else position + 1
        tied = not first_of_scheme and float(rows[i - 1]["accuracy_mean"]) == float(row["accuracy_mean"])
        row["rank"] = rows[i - 1]["rank"] if tied else position
    return rows


def fit_ids_by_split(fit_ids: list[list[str]], n_splits: int) -> list[list[str]]:
    """The ids a run's dictionaries were fitted on, split by split: `fit_ids` is one list per dictionary, split-major
    (every dictionary of split 0, then of split 1, ...: common.smk's evaluation_inputs); [] for a run without one."""
    per_split = len(fit_ids) // n_splits
    return [sum(fit_ids[s * per_split:(s + 1) * per_split], []) for s in range(n_splits)] if per_split else []


def run_leakage_records(run: str, plan: list[dict], folds: list[dict], fits: list[dict],
                        dictionary_fit_ids: list[list[str]]) -> list[dict]:
    """The leakage records of one cross-validated run, fold by fold, for check_leakage.

    `fits[f]` is fold f's fit info (training ids, early-stopping groups; a late fusion's also ``fitted``, what each
    of its parts was fitted on); `dictionary_fit_ids[f]` the ids fold f's dictionaries (and PCA) were fitted on, or
    an empty list for a run without a dictionary.
    """
    group_of = {r["id"]: r["group"] for r in folds}
    records = []
    for fold, fit in enumerate(fits):
        # The copies test-time averaging predicts (VAL_ROTATED) are validation entries of their image's split.
        val_ids = {r["id"] for r in plan if r["role"] in ("val", VAL_ROTATED) and int(r["fold"]) == fold}
        fitted = {"classifier": fit["train_ids"]}
        if "early_stopping_groups" in fit:  # XGBoost held out training groups to stop on
            fitted["early stopping"] = fit["early_stopping_groups"]
        if dictionary_fit_ids:
            fitted["dictionary/PCA"] = dictionary_fit_ids[fold]
        fitted.update(fit.get("fitted", {}))  # a late fusion: its members' fits, its stacking's inner fits and combiner
        records.append(leakage_record(f"{run}/fold{fold}", val_ids, group_of, fitted))
    return records


def leakage_record(name: str, val_ids, group_of: dict, fitted: dict) -> dict:
    """The check_leakage record of one split. What was `fitted` on ids counts with their groups too, so that an
    image of a validation image's group (a byte-identical twin, a tile) is leakage, not only the image itself."""
    return {"name": name, "val_ids": set(val_ids), "val_groups": {group_of[i] for i in val_ids},
            "fitted": {what: set(used) | {group_of[i] for i in used if i in group_of} for what, used in fitted.items()}}


def check_leakage(fold_records: list[dict]) -> list[str]:
    """Each record: {"name", "val_ids", "val_groups", "fitted": {what: ids or groups}}.

    Returns human-readable lines (one per record); raises LeakageError listing every violation.
    """
    problems, lines = [], []
    for rec in fold_records:
        val_ids, val_groups = set(rec["val_ids"]), set(rec["val_groups"])
        for what, used in rec["fitted"].items():
            overlap = (val_ids | val_groups) & set(used)
            if overlap:
                problems.append(f"{rec['name']}: {what} was fitted on {len(overlap)} validation item(s), "
                                f"e.g. {sorted(overlap)[:3]}")
        lines.append(f"ok  {rec['name']}: {len(val_ids)} validation images unseen by "
                     + ", ".join(sorted(rec["fitted"])))
    if problems:
        raise LeakageError("leakage between folds:\n  " + "\n  ".join(problems))
    return lines
