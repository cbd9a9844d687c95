import json
from dataclasses import replace

import numpy as np
import pytest

from cntem import classify
from cntem.classify import Classifier, prediction_rows, settings_for, timed_predict_proba
from cntem.evaluate import (LeakageError, check_leakage, fit_and_predict_fold, fit_ids_by_split, fold_metrics,
                            run_leakage_records, summarize)

CLASSES = ["Cl", "Fi", "Ma"]


def blobs(n_per_class, seed, dim=20):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(4 * i, 1.0, (n_per_class, dim)) for i in range(3)]).astype(np.float32)
    y = [c for c in CLASSES for _ in range(n_per_class)]
    return x, y


SETTINGS = {
    "xgboost": {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32, "colsample_bynode": 0.5,
                "subsample": 1.0, "early_stopping_rounds": 5, "early_stopping_fraction": 0.2, "seed": 0},
    "random_forest": {"n_estimators": 50, "max_features": "sqrt", "seed": 0},
    "adaboost": {"n_estimators": 30, "learning_rate": 0.5, "seed": 0},
    "linear_softmax": {"C": 1.0, "max_iter": 500},
    "logistic": {"C_grid": [0.001, 0.01, 0.1, 1.0], "inner_folds": 3, "max_iter": 500, "seed": 0},
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_classifiers_learn_separable_classes_and_round_trip(name, tmp_path):
    x, y = blobs(30, 0)
    groups = [f"g{i // 2}" for i in range(len(y))]  # pairs, like an image and its rotated copy
    model = Classifier(settings_for(name, SETTINGS[name]), CLASSES).fit(x, y, groups)
    xv, yv = blobs(10, 1)
    proba, _ = timed_predict_proba(model, xv)
    assert proba.shape == (30, 3) and np.allclose(proba.sum(1), 1)
    assert np.mean(np.array(CLASSES)[proba.argmax(1)] == np.array(yv)) > 0.8  # AdaBoost uses stumps
    path = model.save(tmp_path / "clf")
    again = Classifier.load(path, model.describe())
    assert again.name == name and again.settings == model.settings and again.classes == CLASSES
    np.testing.assert_allclose(again.predict_proba(xv), proba, rtol=1e-6)


def test_a_class_missing_from_training_gets_probability_zero():
    x, y = blobs(20, 0)
    keep = [i for i, c in enumerate(y) if c != "Fi"]
    model = Classifier(settings_for("random_forest", SETTINGS["random_forest"]), CLASSES)
    model.fit(x[keep], [y[i] for i in keep], [str(i) for i in keep])
    proba = model.predict_proba(blobs(5, 1)[0])
    assert proba.shape == (15, 3) and not proba[:, 1].any() and np.allclose(proba.sum(1), 1)


def test_xgboost_early_stopping_uses_whole_training_groups():
    x, y = blobs(30, 0)
    groups = [f"g{i // 3}" for i in range(len(y))]
    model = Classifier(settings_for("xgboost", SETTINGS["xgboost"]), CLASSES).fit(x, y, groups)
    stop = set(model.info["early_stopping_groups"])
    assert stop and stop < set(groups)
    assert model.info["best_iteration"] < SETTINGS["xgboost"]["n_estimators"]
    assert model.info["device"] == "cpu"
    assert model.info["columns"] == x.shape[1] and model.model.attr("columns") is None  # not screened


def test_exact_xgboost_is_xgboosts_own_classifier_with_the_same_settings():
    """The paper's configuration (no screening) fits the model XGBClassifier fits on the same rows."""
    import xgboost as xgb

    x, y = blobs(30, 0)
    groups = [f"g{i // 3}" for i in range(len(y))]
    model = Classifier(settings_for("xgboost", SETTINGS["xgboost"]), CLASSES).fit(x, y, groups)
    s, y_idx = model.settings, np.array([CLASSES.index(c) for c in y])
    fit = ~np.isin(groups, model.info["early_stopping_groups"])
    reference = xgb.XGBClassifier(
        n_estimators=s.n_estimators, max_depth=s.max_depth, learning_rate=s.learning_rate, max_bin=s.max_bin,
        colsample_bynode=s.colsample_bynode, subsample=s.subsample, tree_method="hist", random_state=s.seed,
        n_jobs=1, eval_metric="mlogloss", early_stopping_rounds=s.early_stopping_rounds)
    reference.fit(x[fit], y_idx[fit], eval_set=[(x[~fit], y_idx[~fit])], verbose=False)
    assert model.info["best_iteration"] == reference.best_iteration
    xv = blobs(10, 1)[0]
    np.testing.assert_array_equal(model.predict_proba(xv), reference.predict_proba(xv))


def test_xgboost_screening_ranks_columns_on_the_fitting_rows_only():
    """A column that separates the classes only in the early-stopping slice is never screened in."""
    x, y = blobs(30, 0)
    x = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)  # 20 noise columns
    groups = [f"g{i // 3}" for i in range(len(y))]
    # Half the groups stop, and the screening keeps ceil(0.05 x 20) = 1 column.
    settings = settings_for("xgboost", {**SETTINGS["xgboost"], "early_stopping_fraction": 0.5, "screening": 0.05})
    stop = np.isin(groups, Classifier(settings, CLASSES).fit(x, y, groups).info["early_stopping_groups"])
    label = np.array([CLASSES.index(c) for c in y], dtype=np.float32)
    x[stop, 7] += 3 * label[stop]  # over all training rows column 7 has the larger F (20 vs 9) ...
    x[~stop, 13] += label[~stop]   # ... over the rows that fit the trees column 13 has (27 vs 0.4)
    model = Classifier(settings, CLASSES).fit(x, y, groups)
    assert set(model.info["early_stopping_groups"]) == set(np.array(groups)[stop])  # the same split
    assert json.loads(model.model.attr("columns")) == [13]


@pytest.mark.parametrize("fraction, kept", [(0.25, 5), (0.13, 3)])
def test_screened_xgboost_round_trips_on_full_width_input(fraction, kept, tmp_path):
    x, y = blobs(30, 0)
    groups = [f"g{i // 2}" for i in range(len(y))]
    model = Classifier(settings_for("xgboost", {**SETTINGS["xgboost"], "screening": fraction}), CLASSES)
    model.fit(x, y, groups)
    assert model.info["columns"] == kept == model.model.num_features()  # ceil(fraction x 20)
    xv, yv = blobs(10, 1)
    proba = model.predict_proba(xv)  # all 20 columns in, the screened ones used
    assert np.mean(np.array(CLASSES)[proba.argmax(1)] == np.array(yv)) > 0.8
    again = Classifier.load(model.save(tmp_path / "clf"), model.describe())
    assert again.settings.screening == fraction
    np.testing.assert_array_equal(again.predict_proba(xv), proba)


@pytest.mark.parametrize("screening", [None, 0.2])
def test_xgboost_is_deterministic(screening):
    x, y = blobs(30, 0)
    groups = [f"g{i // 2}" for i in range(len(y))]
    settings = settings_for("xgboost", {**SETTINGS["xgboost"], "screening": screening})
    xv = blobs(10, 1)[0]
    first, second = (Classifier(settings, CLASSES, threads=2).fit(x, y, groups).predict_proba(xv) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    other_seed = Classifier(replace(settings, seed=1), CLASSES).fit(x, y, groups).predict_proba(xv)
    assert not np.array_equal(first, other_seed)  # the seed does reach the subsampling


def test_xgboost_two_classes():
    x, y = blobs(30, 0)
    keep = [i for i, c in enumerate(y) if c != "Ma"]
    model = Classifier(settings_for("xgboost", SETTINGS["xgboost"]), CLASSES[:2])
    model.fit(x[keep], [y[i] for i in keep], [f"g{i // 2}" for i in keep])
    proba = model.predict_proba(blobs(10, 1)[0][:20])
    assert proba.shape == (20, 2) and np.allclose(proba.sum(1), 1) and (proba.argmax(1) == [0] * 10 + [1] * 10).all()


def logistic(**changes):
    return Classifier(settings_for("logistic", {**SETTINGS["logistic"], **changes}), CLASSES)


@pytest.mark.parametrize("copies, splitter", [(3, "StratifiedGroupKFold"), (15, "GroupKFold")])
def test_logistic_inner_folds_never_split_a_group(copies, splitter, monkeypatch):
    """Copies of one micrograph (a group) are tested together in one inner fold and trained on in the others."""
    splitters, real = [], classify.inner_splitter

    def recording_splitter(*args):
        splitters.append(real(*args))
        return splitters[-1]

    monkeypatch.setattr(classify, "inner_splitter", recording_splitter)
    x, y = blobs(30, 0)
    groups = np.array([f"g{i // copies}" for i in range(len(y))])  # 15 copies: 2 groups a class, too few to stratify
    model = logistic().fit(x, y, groups)
    y_idx = np.array([CLASSES.index(c) for c in y])
    splits = list(splitters[0].split(x, y_idx, groups))  # seeded: the splits the fit scored its Cs on
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    tested = np.concatenate([groups[test] for _, test in splits])
    assert sorted(tested) == sorted(groups)  # every row tested exactly once
    assert len(splits) == model.info["inner_folds"] == 3 and model.info["inner_splitter"] == splitter


def test_logistic_picks_a_C_of_the_grid_the_smallest_of_the_best_and_refits_on_every_row():
    x, y = blobs(30, 0)
    groups = [f"g{i // 2}" for i in range(len(y))]
    model = logistic().fit(x, y, groups)
    accuracy = model.info["inner_accuracy"]
    assert list(accuracy) == ["0.001", "0.01", "0.1", "1"]
    best = max(accuracy.values())
    assert model.info["C"] in SETTINGS["logistic"]["C_grid"] and accuracy[f"{model.info['C']:g}"] == best
    assert all(a < best for c, a in accuracy.items() if float(c) < model.info["C"])
    assert list(accuracy.values()).count(best) > 1  # a tie on these blobs: the smallest C of it won
    scaler, regression = model.model
    assert regression.C == model.info["C"] and scaler.n_samples_seen_ == len(y)
    reversed_grid = logistic(C_grid=SETTINGS["logistic"]["C_grid"][::-1]).fit(x, y, groups)
    assert reversed_grid.info["C"] == model.info["C"]  # the order of the grid does not break the tie
    xv, yv = blobs(10, 1)
    assert np.mean(np.array(CLASSES)[model.predict_proba(xv).argmax(1)] == np.array(yv)) > 0.95


def test_logistic_C_is_chosen_on_the_training_rows_alone():
    """The fold's validation rows never reach the fit: other validation rows, the same C and model."""
    x, y = blobs(30, 0)
    x[:, :15] = np.random.default_rng(5).normal(size=(len(y), 15))  # 15 noise columns: the Cs score differently
    train = {"X": x, "y": y, "ids": [f"t{i}" for i in range(len(y))]}
    xv, yv = blobs(10, 1)
    val = {"X": xv, "y": yv, "ids": [f"v{i}" for i in range(len(yv))]}
    noise = {**val, "X": np.random.default_rng(9).normal(size=xv.shape).astype(np.float32), "y": yv[::-1]}
    group_of = {i: f"g{n // 2}" for n, i in enumerate(train["ids"])} | {i: i for i in val["ids"]}
    fits = []
    for validation in (val, noise):
        model = logistic()
        _, info = fit_and_predict_fold(model, train, validation, group_of, 0)
        fits.append((info["C"], info["inner_accuracy"], model.model[-1].coef_))
    assert fits[0][:2] == fits[1][:2]
    np.testing.assert_array_equal(fits[0][2], fits[1][2])
    other_train = {**train, "X": train["X"][::-1].copy()}  # the same rows relabelled: the inner CV sees it
    _, info = fit_and_predict_fold(logistic(), other_train, val, group_of, 0)
    assert info["inner_accuracy"] != fits[0][1]


def test_logistic_is_deterministic_and_round_trips(tmp_path):
    x, y = blobs(30, 0)
    groups = [f"g{i // 2}" for i in range(len(y))]
    xv = blobs(10, 1)[0]
    settings = settings_for("logistic", SETTINGS["logistic"])
    first, second = (Classifier(settings, CLASSES, threads=2).fit(x, y, groups) for _ in range(2))
    assert first.info["inner_accuracy"] == second.info["inner_accuracy"]
    np.testing.assert_array_equal(first.predict_proba(xv), second.predict_proba(xv))
    description = json.loads(json.dumps(first.describe()))  # as model.json holds it: the grid becomes a list
    again = Classifier.load(first.save(tmp_path / "clf"), description)
    assert again.settings == first.settings
    np.testing.assert_array_equal(again.predict_proba(xv), first.predict_proba(xv))


@pytest.mark.parametrize("n_groups, inner_folds", [(2, 2), (1, 0)])
def test_logistic_with_few_groups_uses_fewer_folds_or_the_middle_C(n_groups, inner_folds):
    x, y = blobs(30, 0)
    groups = [f"g{i % n_groups}" for i in range(len(y))]  # every group holds every class
    model = logistic(C_grid=[10.0, 0.01, 1.0, 0.1]).fit(x, y, groups)
    assert model.info["inner_folds"] == inner_folds
    if inner_folds:
        assert "C_fallback" not in model.info and len(model.info["inner_accuracy"]) == 4
    else:  # the lower middle of the sorted grid, and why
        assert model.info["C"] == 0.1 and "inner_accuracy" not in model.info
        assert model.info["C_fallback"] == "1 training group(s), too few for 2 inner folds: the middle of C_grid"


def test_logistic_takes_the_middle_C_when_an_inner_fit_would_see_one_class():
    x, y = blobs(30, 0)
    keep = [i for i, c in enumerate(y) if c != "Ma"]
    groups = [f"g{i // 10}" if y[i] == "Cl" else "Fi" for i in keep]  # Cl: 3 groups, Fi: 1
    model = Classifier(settings_for("logistic", SETTINGS["logistic"]), CLASSES[:2])
    model.fit(x[keep], [y[i] for i in keep], groups)
    assert model.info["inner_folds"] == 3 and model.info["C"] == 0.01
    assert model.info["C_fallback"] == "an inner training part holds a single class: the middle of C_grid"


def test_prediction_rows_and_metrics():
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    rows = prediction_rows(["a", "b", "c", "d"], [0] * 4, ["Cl", "Fi", "Fi", "Ma"], proba, CLASSES)
    assert [r["predicted"] for r in rows] == ["Cl", "Fi", "Cl", "Ma"] and rows[2]["confidence"] == "0.600000"
    m = fold_metrics(rows, CLASSES)
    assert m["accuracy"] == 0.75 and m["per_class"] == [1.0, 0.5, 1.0]
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    fits = [{"fit_seconds": 1.0, "predict_seconds": 0.1}, {"fit_seconds": 3.0, "predict_seconds": 0.1}]
    s = summarize([rows, rows[:2]], fits, CLASSES)
    assert s["accuracy"]["mean"] == pytest.approx(0.875) and s["accuracy"]["std"] == pytest.approx(0.125)
    assert s["fit_seconds"]["mean"] == 2.0
    assert s["confusion_normalized"][1] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 0.0]


def test_leakage_check_fails_on_any_validation_image_used_for_fitting():
    clean = {"name": "run/fold0", "val_ids": {"a", "b"}, "val_groups": {"ga", "gb"},
             "fitted": {"dictionary/PCA": ["c", "d"], "classifier": ["c", "d"], "early stopping": ["gc"]}}
    assert len(check_leakage([clean])) == 1
    leaky = {**clean, "fitted": {**clean["fitted"], "dictionary/PCA": ["c", "b"]}}
    with pytest.raises(LeakageError, match=r"run/fold0: dictionary/PCA was fitted on 1 validation item"):
        check_leakage([clean, leaky])
    leaky_group = {**clean, "fitted": {**clean["fitted"], "early stopping": ["gb"]}}
    with pytest.raises(LeakageError, match="early stopping"):
        check_leakage([leaky_group])


def test_run_leakage_records_read_each_fold_s_validation_and_fitted_sets():
    plan = [{"id": "a", "rotation": "0", "class": "Cl", "fold": "0", "role": "val"},
            {"id": "b", "rotation": "0", "class": "Cl", "fold": "0", "role": "train"},
            {"id": "b", "rotation": "0", "class": "Cl", "fold": "1", "role": "val"},
            {"id": "a", "rotation": "90", "class": "Cl", "fold": "1", "role": "train"}]
    folds = [{"id": "a", "group": "ga"}, {"id": "b", "group": "gb"}]
    fits = [{"train_ids": ["b"], "early_stopping_groups": ["gb"]}, {"train_ids": ["a"]}]
    records = run_leakage_records("s/rotate/squash-k8/xgboost", plan, folds, fits, [["b"], ["a"]])
    assert [r["name"] for r in records] == ["s/rotate/squash-k8/xgboost/fold0", "s/rotate/squash-k8/xgboost/fold1"]
    assert records[0]["val_ids"] == {"a"} and records[0]["val_groups"] == {"ga"}
    # ids count with their groups: a twin or tile of a validation image is leakage too
    assert records[0]["fitted"] == {"classifier": {"b", "gb"}, "early stopping": {"gb"}, "dictionary/PCA": {"b", "gb"}}
    assert records[1]["fitted"] == {"classifier": {"a", "ga"}, "dictionary/PCA": {"a", "ga"}}
    assert len(check_leakage(records)) == 2
    # c, a twin of validation image a in its group ga, fitted fold 0's classifier: caught
    twins = folds + [{"id": "c", "group": "ga"}]
    with pytest.raises(LeakageError, match="fold0: classifier"):
        check_leakage(run_leakage_records("run", plan, twins, [{"train_ids": ["b", "c"]}, fits[1]], [["b"], ["a"]]))
    # fold 1's dictionary fitted on its validation image b: caught
    with pytest.raises(LeakageError, match="fold1: dictionary/PCA"):
        check_leakage(run_leakage_records("run", plan, folds, fits, [["b"], ["b"]]))
    # a baseline (no dictionary) has no dictionary record
    assert "dictionary/PCA" not in run_leakage_records("run", plan, folds, fits, [])[0]["fitted"]


def test_an_early_fusions_dictionaries_are_gathered_split_by_split():
    """Split-major dictionary files (two VLAD parts x two splits) -> each split's ids; none without a dictionary."""
    assert fit_ids_by_split([["a"], ["b"], ["c"], ["d", "e"]], 2) == [["a", "b"], ["c", "d", "e"]]
    assert fit_ids_by_split([["a"], ["c"]], 2) == [["a"], ["c"]] and fit_ids_by_split([], 2) == []
