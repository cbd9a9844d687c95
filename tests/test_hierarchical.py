"""The hierarchical classifier (parent CNT / NC, then the class within it) and the per-stage accuracies."""
import copy
import json

import numpy as np
import pytest
from snakemake.utils import validate

from cntem.classify import Classifier, OnlyChoice, settings_for
from cntem.config import consistency_problems
from cntem.evaluate import STAGE_METRICS, fold_metrics, summarize, tidy_rows
from cntem.schemes import BUILTIN_SCHEMES, class_tree, scheme_classes

from test_workflow import REPO, TINY, jobs_of, job_counts, snakemake

CLASSES = ["Cl", "Fi", "GS", "SP"]  # two parents of two classes each
FAST = {"logistic": {"C_grid": [0.01, 1.0], "inner_folds": 2, "max_iter": 500},
        "xgboost": {"n_estimators": 20, "early_stopping_rounds": 5, "screening": 0.5}}


def blobs(classes, n_per_class, seed, dim=12):
    """Separable classes: class i around 3 i in every column."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(3 * i, 1.0, (n_per_class, dim)) for i in range(len(classes))]).astype(np.float32)
    return x, [c for c in classes for _ in range(n_per_class)]


def hierarchical(classes=CLASSES, base="logistic"):
    return Classifier(settings_for("hierarchical", {"base": base, "base_settings": FAST[base]}), classes)


def fitted(classes=CLASSES, base="logistic", seed=0):
    x, y = blobs(classes, 12, seed)
    return hierarchical(classes, base).fit(x, y, [f"g{i // 2}" for i in range(len(y))])


def test_probabilities_are_the_product_of_the_stages_and_sum_to_one():
    model = fitted()
    xv, yv = blobs(CLASSES, 5, 1)
    proba = model.predict_proba(xv)
    stages = model.model
    assert stages.parent_stage.classes == ["CNT", "NC"]
    parent_proba = stages.parent_stage.predict_proba(xv)
    expected = np.column_stack([parent_proba[:, [0]] * stages.class_stages["CNT"].predict_proba(xv),
                                parent_proba[:, [1]] * stages.class_stages["NC"].predict_proba(xv)])
    np.testing.assert_allclose(proba, expected)
    assert proba.shape == (20, 4) and np.allclose(proba.sum(1), 1)
    assert np.mean(np.array(CLASSES)[proba.argmax(1)] == np.array(yv)) > 0.9
    assert model.info["parents"] == {"Cl": "CNT", "Fi": "CNT", "GS": "NC", "SP": "NC"}
    assert model.info["stage1"]["classes"] == ["CNT", "NC"] and "C" in model.info["stage1"]
    assert {p: s["classes"] for p, s in model.info["stage2"].items()} == {"CNT": ["Cl", "Fi"], "NC": ["GS", "SP"]}


def test_each_second_stage_is_fitted_on_its_parent_s_rows_only():
    x, y = blobs(CLASSES, 12, 0)
    groups = [f"g{i // 2}" for i in range(len(y))]
    model = hierarchical().fit(x, y, groups)
    scaler, _ = model.model.class_stages["CNT"].model
    assert scaler.n_samples_seen_ == 24 and model.model.parent_stage.model[0].n_samples_seen_ == 48
    noisy = x.copy()
    noisy[24:] = np.random.default_rng(3).normal(size=(24, x.shape[1]))  # the NC rows only
    other = hierarchical().fit(noisy, y, groups)
    np.testing.assert_array_equal(other.model.class_stages["CNT"].model[-1].coef_,
                                  model.model.class_stages["CNT"].model[-1].coef_)
    assert not np.array_equal(other.model.class_stages["NC"].model[-1].coef_,
                              model.model.class_stages["NC"].model[-1].coef_)


def test_a_parent_of_one_class_is_a_single_choice():
    """5class: NC is a parent of one class; P(NC) is stage 1's P(NC parent)."""
    classes = ["Cl", "Fi", "NC"]
    model = fitted(classes)
    assert isinstance(model.model.class_stages["NC"], OnlyChoice) and model.info["stage2"]["NC"] == {"classes": ["NC"]}
    xv = blobs(classes, 5, 1)[0]
    np.testing.assert_allclose(model.predict_proba(xv)[:, 2], model.model.parent_stage.predict_proba(xv)[:, 1])


def test_classes_of_one_parent_get_the_base_classifier_alone():
    """4class as model.classifier: stage 1 is a single choice, stage 2 the base classifier over the 4 classes."""
    classes = ["Cl", "Fi", "Ma", "MS"]
    model = fitted(classes)
    assert isinstance(model.model.parent_stage, OnlyChoice) and list(model.model.class_stages) == ["CNT"]
    x, y = blobs(classes, 12, 0)
    base = Classifier(settings_for("logistic", FAST["logistic"]), classes).fit(x, y, [f"g{i // 2}" for i in range(48)])
    xv = blobs(classes, 5, 1)[0]
    np.testing.assert_allclose(model.predict_proba(xv), base.predict_proba(xv))


@pytest.mark.parametrize("base", ["logistic", "xgboost"])
def test_round_trip_and_determinism(base, tmp_path):
    first, second = fitted(base=base), fitted(base=base)
    xv = blobs(CLASSES, 5, 1)[0]
    proba = first.predict_proba(xv)
    np.testing.assert_array_equal(proba, second.predict_proba(xv))
    description = json.loads(json.dumps(first.describe()))  # as model.json holds it
    again = Classifier.load(first.save(tmp_path / "classifier"), description)
    assert again.name == "hierarchical" and again.settings == first.settings and again.classes == CLASSES
    np.testing.assert_array_equal(again.predict_proba(xv), proba)
    if base == "xgboost":  # the stages stop early on training groups: the leakage check sees all of them
        stages = [first.model.parent_stage, *first.model.class_stages.values()]
        assert first.info["early_stopping_groups"] == sorted(
            {g for s in stages for g in s.info["early_stopping_groups"]})


def test_refuses_classes_without_a_known_parent():
    x, y = blobs(["Cl", "Blob"], 6, 0)
    with pytest.raises(ValueError, match=r"classes \['Blob'\] have no parent in the class tree .*name the scheme"):
        hierarchical(["Cl", "Blob"]).fit(x, y, [str(i) for i in range(len(y))])
    with pytest.raises(ValueError, match="unknown setting"):
        settings_for("hierarchical", {"base": "logistic", "base_settings": {"n_estimators": 5}})


def test_config_names_a_custom_scheme_without_a_tree_in_one_line():
    config = {"data": {"dir": "x"}, "schemes": ["4class", "mine"], "classifiers": ["xgboost", "hierarchical"],
              "custom_schemes": {"mine": {"Cl": "Cl", "Fi": "Fibres", "Ma": "Ma"}}}
    validate(config, str(REPO / "config" / "schema.yaml"), set_default=True)
    problems = consistency_problems(config)
    assert len(problems) == 1 and problems[0].startswith("hierarchical on scheme 'mine': classes ['Fibres'] have no")
    flat = copy.deepcopy(config)
    flat["classifiers"] = ["xgboost"]
    assert consistency_problems(flat) == []  # a flat classifier needs no tree
    aliases = copy.deepcopy(config)
    aliases["custom_schemes"]["mine"]["Fi"] = "fibre"  # an alias of Fi: a parent is known
    assert consistency_problems(aliases) == []


def test_class_trees_of_the_schemes():
    trees = {name: class_tree(scheme_classes(mapping)) for name, mapping in BUILTIN_SCHEMES.items()}
    assert trees["4class"] is None  # one parent
    assert trees["5class"] == {"Cl": "CNT", "Fi": "CNT", "Ma": "CNT", "MS": "CNT", "NC": "NC"}
    assert set(trees["8class"].values()) == {"CNT", "NC"} and trees["8class"]["HDP"] == "NC"
    assert class_tree(["CNT", "NC"]) is None and class_tree(["Cl", "GS"]) is None  # unknown; parents of one


def row(true, predicted):
    return {"true": true, "predicted": predicted}


def test_stage_accuracies_of_a_hand_made_prediction_table():
    classes = ["Cl", "Fi", "GS", "SP"]
    fold0 = [row("Cl", "Cl"), row("Cl", "Fi"), row("Fi", "GS"), row("GS", "SP"), row("SP", "SP")]
    fold1 = [row("Cl", "Cl"), row("GS", "Fi"), row("SP", "Fi"), row("Fi", "Fi")]
    # fold 0: right parent 4 of 5, of them right class 2 of 4; fold 1: 2 of 4, then 2 of 2
    metrics0 = fold_metrics(fold0, classes)
    assert metrics0["stage1_accuracy"] == 0.8 and metrics0["stage2_accuracy"] == 0.5
    assert metrics0["accuracy"] == pytest.approx(0.8 * 0.5)  # right class = right parent, then right class in it
    fits = [{"fit_seconds": 1.0, "predict_seconds": 0.1}] * 2
    metrics = summarize([fold0, fold1], fits, classes)
    assert metrics["stage1_accuracy"] == {"mean": pytest.approx(0.65), "std": pytest.approx(0.15), "folds": [0.8, 0.5],
                                          "repeats": [pytest.approx(0.65)], "repeat_std": 0.0}  # one repeat
    assert metrics["stage2_accuracy"]["mean"] == pytest.approx(0.75)
    assert metrics["stage2_accuracy"]["std"] == pytest.approx(0.25)
    rows = {r["metric"]: r for r in tidy_rows({"scheme": "s"}, metrics)}
    assert rows["stage1_accuracy"]["mean"] == "0.650000" and rows["stage2_accuracy"]["std"] == "0.250000"
    assert rows["stage1_accuracy"]["class"] == "all"


def test_a_scheme_without_a_tree_gets_no_stage_metrics():
    classes = ["Cl", "Fi", "Ma", "MS"]  # 4class
    rows = [row("Cl", "Cl"), row("Fi", "Ma"), row("Ma", "Ma"), row("MS", "Fi")]
    assert not set(STAGE_METRICS) & set(fold_metrics(rows, classes))
    metrics = summarize([rows], [{"fit_seconds": 1.0, "predict_seconds": 0.1}], classes)
    assert not set(STAGE_METRICS) & set(metrics)
    assert not set(STAGE_METRICS) & {r["metric"] for r in tidy_rows({"scheme": "4class"}, metrics)}


def test_dry_run_runs_hierarchical_only_on_schemes_with_a_tree(tmp_path):
    """tiny (Cl, Fi, Ma: all CNT) keeps its jobs; tree (Cl, Fi, GS) gets hierarchical runs at every K and pooled."""
    config = {**TINY, "schemes": ["tiny", "tree"],
              "custom_schemes": {**TINY["custom_schemes"], "tree": {"Cl": "Cl", "Fi": "Fi", "GS": "GS"}},
              "classifiers": ["xgboost", "random_forest", "adaboost", "hierarchical"]}
    log = snakemake(tmp_path, config, "-n")
    hierarchical_runs = sorted(w for w in jobs_of(log, "evaluate") if w.endswith("/hierarchical"))
    assert hierarchical_runs == [f"scheme=tree, balance=rotate, method=squash-{r}/hierarchical"
                                 for r in ("k4", "k8", "pooled")]
    counts = job_counts(log)
    assert counts["evaluate"] == 2 * 12 + 3  # per scheme 9 + 3 pooled (test_workflow), + tree's hierarchical
    assert counts["train_classifier"] == 2 * 20 + 3 * 2
