"""Repeated cross-validation's metrics and honest model selection (nested grouped CV, model.method auto)."""
import numpy as np
import pytest

from cntem.encoded import write_encoded
from cntem.evaluate import summarize
from cntem.selection import (InnerSelection, best_candidate, nested_row, nested_summary, plain_scores,
                             training_rows)


def prediction(true, predicted):
    return {"id": "x", "fold": 0, "true": true, "predicted": predicted, "confidence": "1.0"}


def fold_with_accuracy(right, of=4):
    """`of` predictions, classes Cl and Fi alternating, the first `right` of them right."""
    truth = ["Cl", "Fi"] * (of // 2)
    return [prediction(t, t if i < right else ({"Cl", "Fi"} - {t}).pop()) for i, t in enumerate(truth)]


def test_repeated_cv_reports_the_mean_over_splits_and_the_spread_across_repeats():
    # 2 repeats x 2 folds: accuracies 1.0, 0.5 (repeat 0, mean 0.75) and 0.75, 0.75 (repeat 1, mean 0.75) ...
    splits = [fold_with_accuracy(4), fold_with_accuracy(2), fold_with_accuracy(3), fold_with_accuracy(3)]
    fits = [{"fit_seconds": s, "predict_seconds": 0.1} for s in (1.0, 2.0, 3.0, 4.0)]
    metrics = summarize(splits, fits, ["Cl", "Fi"], n_repeats=2)
    assert metrics["n_folds"] == 2 and metrics["n_repeats"] == 2
    assert metrics["accuracy"]["folds"] == [1.0, 0.5, 0.75, 0.75] and metrics["accuracy"]["mean"] == 0.75
    assert metrics["accuracy"]["repeats"] == [0.75, 0.75] and metrics["accuracy"]["repeat_std"] == 0.0
    assert metrics["accuracy"]["std"] == pytest.approx(np.std([1.0, 0.5, 0.75, 0.75]))
    assert metrics["fit_seconds"]["repeats"] == [1.5, 3.5] and metrics["fit_seconds"]["repeat_std"] == 1.0
    # ... and when the repeats disagree, repeat_std says by how much
    moved = summarize(splits[:2] + [fold_with_accuracy(4)] * 2, fits, ["Cl", "Fi"], n_repeats=2)
    assert moved["accuracy"]["repeats"] == [0.75, 1.0] and moved["accuracy"]["repeat_std"] == pytest.approx(0.125)
    # one repeat: the metrics of a plain K-fold, spread 0
    single = summarize(splits, fits, ["Cl", "Fi"])
    assert single["n_folds"] == 4 and single["accuracy"]["repeat_std"] == 0.0 and single["accuracy"]["mean"] == 0.75


def test_ties_go_to_macro_f1_then_to_the_candidate_listed_first():
    scores = {"a": {"accuracy": 0.8, "macro_f1": 0.70}, "b": {"accuracy": 0.8, "macro_f1": 0.75},
              "c": {"accuracy": 0.8, "macro_f1": 0.75}, "d": {"accuracy": 0.79, "macro_f1": 0.99}}
    assert best_candidate(scores, ["a", "b", "c", "d"]) == "b"
    assert best_candidate(scores, ["d", "c", "b", "a"]) == "c"
    assert best_candidate({**scores, "a": {"accuracy": 0.8 + 1e-12, "macro_f1": 0.7}}, ["a", "b"]) == "b"  # equal


class _Rows:
    """A stand-in encoder and store for write_encoded: the features of each entry as given."""

    def __init__(self, features):
        self.features, self.dim = features, next(iter(features.values())).shape[0]

    def transform_store(self, store, keys, progress, out):
        for i, key in enumerate(keys):
            out[i] = self.features[key]

    def describe(self):
        return {"representation": "test"}


def outer_split(seed=0):
    """One outer split of 3 classes x 12 micrographs (one group each): 8 per class train, each with a rotated copy,
    4 per class validate. Representation "squash-k8" separates the classes, "squash-pooled" is noise."""
    rng = np.random.default_rng(seed)
    classes = ["Cl", "Fi", "Ma"]
    train = [{"id": f"{c}{i}", "rotation": r, "class": c} for c in classes for i in range(8) for r in (0, 90)]
    val = [{"id": f"{c}{i}", "rotation": 0, "class": c} for c in classes for i in range(8, 12)]
    features = {}
    for r in train + val:
        features[("squash-k8", r["id"], r["rotation"])] = rng.normal(classes.index(r["class"]), 0.3, 6)
        features[("squash-pooled", r["id"], r["rotation"])] = rng.normal(0, 1, 6)
    return {"train": train, "val": val}, features


def write_split(folder, splits, features):
    """Each representation's encoded file of the split, as training_rows takes them: {name: [its file]}."""
    paths = {}
    for representation in ("squash-k8", "squash-pooled"):
        paths[representation] = [folder / f"{representation}.h5"]
        rows = {key[1:]: v for key, v in features.items() if key[0] == representation}
        write_encoded(paths[representation][0], _Rows(rows), None, splits)
    return paths


CANDIDATES = ["squash-pooled/random_forest", "squash-k8/random_forest", "squash-k8/adaboost"]
SETTINGS = {"random_forest": {"n_estimators": 20}, "adaboost": {"n_estimators": 10}}


def test_nested_selection_never_sees_the_outer_validation_fold(tmp_path):
    splits, features = outer_split()
    group_of = {r["id"]: r["id"] for r in splits["train"] + splits["val"]}
    honest = InnerSelection(CANDIDATES, SETTINGS, inner_folds=3).fit(
        training_rows(write_split(tmp_path, splits, features)), group_of)
    assert honest.best_ in ("squash-k8/random_forest", "squash-k8/adaboost")  # the informative representation wins
    assert min(honest.scores_["squash-k8/random_forest"]["accuracy"]) > 0.8
    assert honest.scores_["squash-pooled/random_forest"]["accuracy_mean"] < 0.6
    # the rows the selection read are exactly the training rows; inner folds keep a micrograph's copies together
    # and are scored on originals
    val_ids = {r["id"] for r in splits["val"]}
    assert honest.used_ids_ == {r["id"] for r in splits["train"]} and not honest.used_ids_ & val_ids
    assert len(honest.inner_folds_) == 3
    for fold in honest.inner_folds_:
        assert not set(fold["train_ids"]) & set(fold["val_ids"])
    # Outer validation rows replaced: the pooled hypercolumns now separate them perfectly and the labels are
    # shuffled. Had the selection read them, its scores (and likely its choice) would change.
    rng = np.random.default_rng(1)
    perturbed = dict(features)
    shuffled = rng.permutation([r["class"] for r in splits["val"]])
    val = [{**r, "class": c} for r, c in zip(splits["val"], shuffled)]
    for r in val:
        perturbed[("squash-pooled", r["id"], 0)] = np.full(6, 10.0 * ["Cl", "Fi", "Ma"].index(r["class"]))
        perturbed[("squash-k8", r["id"], 0)] = rng.normal(0, 5, 6)
    (tmp_path / "perturbed").mkdir()
    again = InnerSelection(CANDIDATES, SETTINGS, inner_folds=3).fit(
        training_rows(write_split(tmp_path / "perturbed", {"train": splits["train"], "val": val}, perturbed)), group_of)
    assert again.scores_ == honest.scores_ and again.best_ == honest.best_
    assert again.describe() == honest.describe()


def test_candidates_must_share_the_outer_splits_rows(tmp_path):
    splits, features = outer_split()
    paths = write_split(tmp_path, splits, features)
    other = {"train": splits["train"][:-2], "val": splits["val"]}
    (tmp_path / "other").mkdir()
    paths["squash-pooled"] = write_split(tmp_path / "other", other, features)["squash-pooled"]
    with pytest.raises(ValueError, match="training rows differ"):
        InnerSelection(CANDIDATES[1:] + CANDIDATES[:1], SETTINGS).fit(training_rows(paths),
                                                                      {r["id"]: r["id"] for r in splits["train"]})


def comparison_row(method, accuracy, macro_f1, balance="rotate"):
    return {"scheme": "s", "balance": balance, "method": method, "accuracy_mean": f"{accuracy:.6f}",
            "accuracy_std": "0.050000", "accuracy_repeat_std": "0.010000", "macro_f1_mean": f"{macro_f1:.6f}"}


def test_auto_picks_the_best_plain_candidate_and_the_summary_says_why():
    comparison = [comparison_row("squash-k50/xgboost", 0.90, 0.88),
                  comparison_row("squash-pooled/xgboost", 0.93, 0.9),
                  comparison_row("squash-top/linear_softmax", 0.99, 0.99),  # no candidate: never chosen
                  comparison_row("tiles-pooled/xgboost", 0.97, 0.97),  # another input mode's run, not listed
                  comparison_row("squash-pooled/xgboost", 0.99, 0.99, balance="none"),  # another balance's run
                  comparison_row("squash-k10/random_forest", 0.93, 0.91)]
    names = ["squash-k50/xgboost", "squash-pooled/xgboost", "squash-k10/random_forest"]
    plain = plain_scores(comparison, "s", "rotate", names)
    assert plain["squash-pooled/xgboost"] == {"accuracy": 0.93, "macro_f1": 0.9, "accuracy_std": 0.05,
                                              "accuracy_repeat_std": 0.01}
    outer = [{"chosen": c, "outer": {"accuracy": a, "macro_f1": a - 0.1}}
             for c, a in [("squash-k50/xgboost", 0.8), ("squash-pooled/xgboost", 0.9), ("squash-pooled/xgboost", 0.7),
                          ("squash-k50/xgboost", 0.8)]]
    summary = nested_summary(outer, plain, names, n_repeats=2)
    # equal plain accuracy (0.93): the higher macro-F1 wins
    assert summary["plain"]["winner"] == "squash-k10/random_forest" and summary["plain"]["scores"] == plain
    assert summary["nested"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert summary["nested"]["accuracy"]["repeats"] == pytest.approx([0.85, 0.75])
    assert summary["nested"]["choice_counts"] == {"squash-k50/xgboost": 2, "squash-pooled/xgboost": 2}
    row = nested_row("s", summary)
    assert row["choices"] == ("0:squash-k50/xgboost 1:squash-pooled/xgboost 2:squash-pooled/xgboost "
                              "3:squash-k50/xgboost")
    assert row["plain_winner"] == "squash-k10/random_forest" and row["plain_accuracy_mean"] == "0.930000"
    assert row["nested_accuracy_repeat_std"] == "0.050000" and row["n_folds"] == 2 and row["n_candidates"] == 3
