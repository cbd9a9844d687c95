"""The one grammar of the method space (cntem.runs) and the runs a config asks for (cntem.method_space)."""
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from cntem.method_space import MethodSpace
from cntem.runs import (CLASSIFIERS, INPUT_MODES, METHOD_PATTERN, REPRESENTATION_PATTERN, Method, Representation, Run,
                        candidate_pattern, kind_pattern)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")


def config_of(**overrides):
    """A schema-valid config with its defaults, top-level sections replaced by `overrides`."""
    config = {"data": {"dir": "x"}, **overrides}
    validate(config, schema=SCHEMA, set_default=True)
    return config


@pytest.mark.parametrize("name, parts", [
    ("squash-k50/xgboost", ("squash", "vlad", 50, "xgboost", "")),
    ("tiles-pooled/logistic-rot4", ("tiles", "pooled", None, "logistic", "rot4")),
    ("native-k8/hierarchical", ("native", "vlad", 8, "hierarchical", "")),
    ("center_crop-top/linear_softmax-rot4", ("center_crop", "top", None, "linear_softmax", "rot4")),
])
def test_a_method_name_round_trips_through_its_parts(name, parts):
    method = Method.parse(name)
    rep = method.representation
    assert (rep.input_mode, rep.kind, rep.k, method.classifier, method.averaging) == parts
    assert method.name == name and Method.of(*parts[:2], parts[3], k=parts[2], averaging=parts[4]) == method
    assert Representation.parse(rep.name) == rep
    assert re.fullmatch(METHOD_PATTERN, name) and re.fullmatch(REPRESENTATION_PATTERN, rep.name)
    assert re.fullmatch(kind_pattern(rep.kind), rep.name)
    assert method.columns() == {"method": name, "input_mode": parts[0], "representation": parts[1],
                                "k": "" if parts[2] is None else str(parts[2]), "classifier": parts[3],
                                "averaging": parts[4]}
    assert method.plain.averaging == "" and method.plain.averaged(parts[4]) == method


@pytest.mark.parametrize("name, members, columns", [
    ("squash-k50+tiles-pooled/logistic", ["squash-k50+tiles-pooled/logistic"],
     ("squash+tiles", "fused", "", "logistic", "")),
    ("squash-pooled+tiles-pooled+native-pooled/xgboost-rot4", ["squash-pooled+tiles-pooled+native-pooled/xgboost-rot4"],
     ("squash+tiles+native", "fused", "", "xgboost", "rot4")),
    ("squash-k50+tiles-pooled/mean-logistic", ["squash-k50/logistic", "tiles-pooled/logistic"],
     ("squash+tiles", "fused", "", "mean-logistic", "")),
    ("squash-k50/stack-logistic+xgboost-rot4", ["squash-k50/logistic-rot4", "squash-k50/xgboost-rot4"],
     ("squash", "vlad", "50", "stack-logistic+xgboost", "rot4")),
    ("squash-k50+tiles-k50/stack-xgboost+logistic", ["squash-k50/xgboost", "tiles-k50/logistic"],
     ("squash+tiles", "fused", "", "stack-xgboost+logistic", "")),
])
def test_a_fused_name_round_trips_and_names_its_members(name, members, columns):
    method = Method.parse(name)
    assert method.name == name and method.is_fused and method.deployable
    assert [m.name for m in method.members] == members
    assert Representation.parse(method.representation.name) == method.representation
    assert re.fullmatch(METHOD_PATTERN, name) and re.fullmatch(REPRESENTATION_PATTERN, method.representation.name)
    assert tuple(method.columns().values())[1:] == columns
    assert Method.of_fold_job(method.representation.name, method.estimator) == method.plain
    assert method.plain.averaged(method.averaging) == method
    if method.combiner:
        assert Method.late(method.combiner, method.members) == method
        assert re.fullmatch(candidate_pattern(), method.plain.name)
    assert all(member in name for member in ("/", "+"))  # one path below its representation's folder, as any method


@pytest.mark.parametrize("name", ["squash-k50+squash-k50/logistic", "squash-k50/mean-logistic",
                                  "squash-k50/mean-logistic+logistic", "squash-k50+tiles-pooled/logistic+xgboost",
                                  "squash-k50+tiles-pooled/mean-logistic+xgboost+adaboost",
                                  "squash-top+tiles-pooled/logistic", "squash-k50+tiles-pooled/median-logistic",
                                  "squash-k50+tiles-pooled/mean-linear_softmax"])
def test_fusions_outside_the_grammar_are_refused(name):
    with pytest.raises(ValueError):
        Method.parse(name)


@pytest.mark.parametrize("name", ["k50/xgboost", "squash-k50", "squash-k50/svm", "squash-kx/xgboost",
                                  "squash-pooled/linear_softmax", "squash-top/xgboost", "tiles-k50/xgboost-rot8",
                                  "squash-k50/xgboost/extra", "hcol+tta"])
def test_names_outside_the_grammar_are_refused(name):
    with pytest.raises(ValueError):
        Method.parse(name)
    # the pattern (wildcard constraints) is the syntax; pairing linear_softmax with the top layer is the value's
    assert not re.fullmatch(METHOD_PATTERN, name) or name in ("squash-pooled/linear_softmax", "squash-top/xgboost")


def test_runs_name_their_evaluation_folder_and_table_columns():
    run = Run("4class", "rotate", Method.parse("squash-k50/xgboost-rot4"))
    assert run.name == "4class/rotate/squash-k50/xgboost-rot4"
    assert run.columns()["scheme"] == "4class" and run.columns()["averaging"] == "rot4"
    assert run.method.predictions_file == "predictions-rot4.tsv"
    assert run.method.plain.predictions_file == "predictions.tsv"
    assert Method.parse("squash-top/linear_softmax").label == "VGG16 pooled top layer (baseline)"


def test_the_paper_protocol_runs_what_the_paper_ran():
    """Defaults (the paper): each balance strategy x (VLAD at K = 50 + XGBoost, the baseline), and the K study."""
    space = MethodSpace(config_of(schemes=["4class"]))
    names = {(r.balance, r.method.name) for r in space.runs()}
    assert {("none", "squash-k50/xgboost"), ("none", "squash-top/linear_softmax"), ("rotate", "squash-k50/xgboost"),
            ("rotate", "squash-top/linear_softmax")} <= names
    k_study = {(k, c) for k in (10, 20, 50, 100, 200, 300) for c in ("xgboost", "random_forest", "adaboost")}
    assert {(m.representation.k, m.classifier) for m in space.k_study("4class")} == k_study
    assert len(names) == 2 + len(k_study) + 1  # none: 2; rotate: the K study (K = 50 XGBoost among it), baseline
    assert not any(r.method.averaging for r in space.runs())
    assert [m.name for m in space.model_candidates()] == ["squash-k50/xgboost"]
    assert [(r.balance, r.method.name) for r in space.main_panels("4class")] == [
        ("none", "squash-top/linear_softmax"), ("none", "squash-k50/xgboost"),
        ("rotate", "squash-top/linear_softmax"), ("rotate", "squash-k50/xgboost")]


def test_rotation_averaging_applies_to_every_run_of_its_balance_strategies():
    """Every representation, classifier and input mode, the baseline included, at the averaged strategies only."""
    space = MethodSpace(config_of(schemes=["8class"], k_values=[50], classifiers=["logistic", "xgboost"],
                                  representations={"pooled": True, "input_modes": ["tiles"]},
                                  evaluation={"rotation_averaging": ["rotate"]}))
    runs = space.runs()
    plain = [r for r in runs if not r.method.averaging]
    averaged = {(r.balance, r.method.plain) for r in runs if r.method.averaging}
    assert averaged == {(r.balance, r.method) for r in plain if r.balance == "rotate"}
    assert all(r.method.averaging == "rot4" for r in runs if r.method.averaging)
    rotated = {r.method.name for r in runs if r.method.averaging}
    assert {"squash-pooled/logistic-rot4", "tiles-pooled/logistic-rot4", "tiles-top/linear_softmax-rot4",
            "squash-k50/xgboost-rot4", "tiles-k50/logistic-rot4"} <= rotated
    assert not any(r.balance == "none" and r.method.averaging for r in runs)


def test_the_selection_counts_what_the_config_implies_and_every_generated_name_validates():
    config = config_of(schemes=["8class", "4class"], k_values=[10, 50], classifiers=["logistic", "hierarchical"],
                       representations={"pooled": True, "input_modes": ["tiles", "native"]},
                       selection={"nested": True}, model={"method": "auto"})
    space = MethodSpace(config)
    # 8class (a class tree): the paper's method (always cross-validated), 2 classifiers x (2 K + pooled) squash,
    # 2 x (K + pooled) per further mode
    assert len(space.candidates("8class")) == 1 + 2 * 3 + 2 * 2 * 2
    # 4class: no hierarchical
    assert len(space.candidates("4class")) == 1 + 1 * 3 + 2 * 1 * 2
    assert [m.name for m in space.candidates("8class")[:3]] == ["squash-k50/xgboost", "squash-k10/logistic",
                                                                "squash-k10/hierarchical"]
    assert MethodSpace(config_of()).candidates("4class")[0].name == "squash-k50/xgboost"  # the paper's first
    names = list(dict.fromkeys(m.name for s in space.schemes for m in space.candidates(s)))
    assert all(re.fullmatch(candidate_pattern(), n) for n in names)
    # the names the workflow generates for candidates validate against the schema's pattern, including other modes
    validate(config_of(selection={"candidates": names}), schema=SCHEMA)
    assert space.problems() == []


FUSIONS = ["squash-k10+tiles-pooled/logistic", "squash-k50+tiles-pooled/mean-logistic",
           "squash-k50+tiles-pooled/stack-logistic", "squash-pooled+tiles-pooled/xgboost"]


def test_fusions_are_runs_beside_their_members_and_candidates_the_config_implies():
    config = config_of(schemes=["8class", "4class"], k_values=[10, 50], classifiers=["logistic", "hierarchical"],
                       representations={"pooled": True, "input_modes": ["tiles"]},
                       evaluation={"rotation_averaging": ["rotate"]}, selection={"nested": True},
                       fusion={"methods": FUSIONS + ["squash-k50/mean-logistic+hierarchical"]})
    space = MethodSpace(config)
    assert space.problems() == []
    runs = {(r.scheme, r.balance, r.method.name) for r in space.runs()}
    for name in FUSIONS:  # at the main balance strategy, rotation-averaged there, beside their members
        method = Method.parse(name)
        assert {("4class", "rotate", name), ("4class", "rotate", method.averaged("rot4").name)} <= runs
        assert {("4class", "rotate", m.name) for m in method.fused_singles} <= runs
        assert not any(r[1] == "none" and r[2] == name for r in runs)
    # 8class: the paper's, 2 classifiers x (2 K + pooled) squash, 2 x (K + pooled) tiles; the single methods the
    # fusions add (squash-pooled/xgboost, tiles-pooled/xgboost: xgboost is not in `classifiers`) and the fusions
    assert len(space.candidates("8class")) == 1 + 2 * 3 + 2 * 2 + 2 + 5
    # 4class: no hierarchical (nor the fusion with a hierarchical member)
    assert len(space.candidates("4class")) == 1 + 1 * 3 + 1 * 2 + 2 + 4
    assert [m.name for m in space.candidates("4class")[-4:]] == FUSIONS
    # a fused method is deployable: model.method auto chooses among the same candidates, or names one
    auto = MethodSpace({**config, "model": {**config["model"], "method": "auto"}})
    assert auto.model_candidates() == space.candidates("8class") and auto.problems() == []
    named = MethodSpace({**config, "model": {**config["model"], "method": FUSIONS[1]}})
    assert named.problems() == [] and [m.name for m in named.model_candidates()] == [FUSIONS[1]]
    assert "not extracted" in MethodSpace(config_of(model={"method": FUSIONS[1]})).problems()[0]
    missing = MethodSpace(config_of(fusion={"methods": ["squash-k50+native-pooled/logistic"]}))
    assert "needs input mode(s) native" in missing.problems()[0]
    assert "is no fusion" in MethodSpace(config_of(fusion={"methods": ["squash-k50/logistic"]})).problems()[0]


def test_listed_candidates_of_any_input_mode_are_kept_in_their_order():
    listed = ["tiles-pooled/logistic", "squash-k50/xgboost"]
    space = MethodSpace(config_of(schemes=["4class"], k_values=[50], classifiers=["xgboost", "logistic"],
                                  representations={"pooled": True, "input_modes": ["tiles"]},
                                  selection={"candidates": listed, "nested": True}))
    assert [m.name for m in space.candidates("4class")] == listed and space.problems() == []
    space = MethodSpace(config_of(schemes=["4class"], selection={"candidates": ["native-pooled/logistic"]}))
    assert "'native-pooled/logistic' is not cross-validated" in space.problems()[0]


def test_a_deployed_method_must_be_deployable_and_extracted():
    assert "cannot be deployed" in MethodSpace(config_of(model={"method": "squash-k50/xgboost-rot4"})).problems()[0]
    assert "not extracted" in MethodSpace(config_of(model={"method": "tiles-pooled/logistic"})).problems()[0]
    assert "no method name" in MethodSpace(config_of(model={"method": "k50/xgboost"})).problems()[0]


def test_no_other_file_builds_or_splits_a_method_string():
    """The grammar lives in cntem/runs.py: the rules, scripts, package and benchmarks use its values, so none of them
    spells a method's parts into a string or takes one apart."""
    forbidden = re.compile(r"""f["']k\{|\.split\(["']/["']\)|r?partition\(["'][-/]["']\)|removesuffix\(["'][-_+]|"""
                           r""""hcol"|pooled_hcol|\+tta|["']_tta["']|-rot4["']|\{mode\}-|"""
                           r"""parse_candidate|base_method|mode_method""")
    sources = [REPO / "Snakefile", *(REPO / "rules").glob("*.smk"), *(REPO / "workflow_scripts").rglob("*.py"),
               *(REPO / "bench").glob("*.py")]
    offenders = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in sources
                 if path.name != "runs.py" for n, line in enumerate(path.read_text().splitlines(), 1)
                 if forbidden.search(line)]
    assert offenders == []
    schema = yaml.safe_load(open(SCHEMA))["properties"]
    assert set(INPUT_MODES) == set(schema["representations"]["properties"]["input_modes"]["items"]["enum"])
    assert schema["selection"]["properties"]["candidates"]["items"]["pattern"] == candidate_pattern()
    assert schema["fusion"]["properties"]["methods"]["items"]["pattern"] == candidate_pattern()
    assert "linear_softmax" in CLASSIFIERS
