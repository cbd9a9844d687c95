import json
from dataclasses import replace

import numpy as np
import pytest

from cntem.classify import Classifier, prediction_rows, settings_for, timed_predict_proba
from cntem.evaluate import LeakageError, check_leakage, fold_metrics, run_leakage_records, summarize

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
    records = run_leakage_records("s/rotate/k8/xgboost", plan, folds, fits, [["b"], ["a"]])
    assert [r["name"] for r in records] == ["s/rotate/k8/xgboost/fold0", "s/rotate/k8/xgboost/fold1"]
    assert records[0]["val_ids"] == {"a"} and records[0]["val_groups"] == {"ga"}
    assert records[0]["fitted"] == {"classifier": ["b"], "early stopping": ["gb"], "dictionary/PCA": ["b"]}
    assert records[1]["fitted"] == {"classifier": ["a"], "dictionary/PCA": ["a"]}
    assert len(check_leakage(records)) == 2
    # fold 1's dictionary fitted on its validation image b: caught
    with pytest.raises(LeakageError, match="fold1: dictionary/PCA"):
        check_leakage(run_leakage_records("run", plan, folds, fits, [["b"], ["b"]]))
    # a baseline (no dictionary) has no dictionary record
    assert "dictionary/PCA" not in run_leakage_records("run", plan, folds, fits, [])[0]["fitted"]
