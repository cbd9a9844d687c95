"""The config means what it says: schema defaults are the paper's method, and experiments don't inherit the demo."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cntem.config import consistency_problems, schema_problems
from cntem.method_space import MethodSpace
from cntem.runs import CLASSIFIERS, INPUT_MODES, KINDS, Method, candidate_pattern

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")
PAPER_TAPS = ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]


def load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def with_defaults(config):
    config = copy.deepcopy(config)
    validate(config, SCHEMA, set_default=True)
    return config


def effective_config(checkout, *configfiles, extra=()):
    """The config as Snakemake resolves it for a run from the checkout's root (as users run it): what the
    provenance rule writes to results/config.yaml."""
    args = ["--configfile", *map(str, configfiles)] if configfiles else []
    done = subprocess.run([sys.executable, "-m", "snakemake", "results/config.yaml", "--cores", "1", *args, *extra],
                          cwd=checkout, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return yaml.safe_load((checkout / "results" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["demo.yaml", "niosh.yaml", "beyond.yaml"])
def test_shipped_configs_are_valid(name):
    config = with_defaults(load(name))
    assert consistency_problems(config) == []


def test_niosh_config_is_the_papers_protocol_key_by_key(checkout):
    config = effective_config(checkout, "config/niosh.yaml")
    hc = config["hypercolumns"]
    assert hc["taps"] == PAPER_TAPS and hc["density"] == 0.1
    assert hc["image_size"] == 224 and hc["input_mode"] == "squash" and hc["max_side"] == 1024
    assert config["k"] == 50 and config["k_values"] == [10, 20, 50, 100, 200, 300]
    assert config["vlad"] == {"pca_dim": None, "pca_whiten": False, "power_norm": False}  # full 73,600-d VLAD
    assert config["classifiers"][0] == "xgboost"
    # VLAD against the baseline only, and a model of the paper's method: no representation beyond the paper's
    assert config["representations"] == {"pooled": False, "input_modes": []}
    assert MethodSpace(config).model_candidates() == [Method.of("squash", "vlad", "xgboost", 50)]
    # each validation image and each new image predicted once, as it is: no rotation averaging
    assert config["evaluation"]["rotation_averaging"] is False and config["predict"]["rotation_averaging"] is False
    assert config["cv"] == {"folds": 5, "seed": 42, "repeats": 1}  # one 5-fold assignment
    # no nested selection, and the deployed model is the paper's method as stated, not a selection's winner
    assert config["selection"]["nested"] is False and config["model"]["method"] == "squash-k50/xgboost"
    assert config["balance"] == {"strategies": ["none", "rotate"], "per_class": 600, "seed": 42}
    assert config["schemes"] == ["4class", "8class"] and config["weights"] == "keras-imagenet"
    assert config["demo"]["enabled"] is False and config["predict"]["input"] is None
    assert config["data"]["dir"] == "data/niosh"


def test_schema_defaults_are_the_method_niosh_states():
    """niosh.yaml spells out the paper's method; a config that omits it gets the same from the schema."""
    niosh, defaults = with_defaults(load("niosh.yaml")), with_defaults({"data": {"dir": "x"}})
    for key in ("cv", "selection", "dictionary", "vlad", "representations", "evaluation", "k", "k_values", "classifiers",
                "xgboost", "random_forest", "adaboost", "baseline", "weights", "device"):
        assert defaults[key] == niosh[key], key
    # the default (null) deploys the paper's method, which niosh.yaml names
    assert MethodSpace(defaults).model_candidates() == MethodSpace(niosh).model_candidates()
    assert [m.name for m in MethodSpace(defaults).model_candidates()] == [load("niosh.yaml")["model"]["method"]]
    stated = load("niosh.yaml")
    assert stated["representations"] == {"pooled": False, "input_modes": []}
    for key in ("taps", "density", "image_size", "input_mode", "max_side", "seed"):
        assert defaults["hypercolumns"][key] == niosh["hypercolumns"][key], key
    stated = load("niosh.yaml")["xgboost"]  # every classifier setting written out, not inherited
    assert set(stated) == set(yaml.safe_load(Path(SCHEMA).read_text())["properties"]["xgboost"]["properties"])


def test_own_data_config_gets_no_demo_setting(checkout):
    own = checkout / "own.yaml"
    own.write_text(yaml.safe_dump({"data": {"dir": "micrographs", "layout": "folders"}}))
    config = effective_config(checkout, own)
    assert config == with_defaults({"data": {"dir": "micrographs", "layout": "folders"}})
    assert config["vlad"]["pca_dim"] is None and config["predict"]["input"] is None
    assert config["demo"]["enabled"] is False and config["k_values"] == [10, 20, 50, 100, 200, 300]


def test_a_run_naming_no_data_is_the_demo(checkout):
    config = effective_config(checkout, extra=["--config", "weights=random"])
    assert config == with_defaults({**load("demo.yaml"), "weights": "random"})


def test_results_config_carries_its_digest(checkout):
    from cntem.config import config_digest

    own = checkout / "own.yaml"
    own.write_text(yaml.safe_dump({"data": {"dir": "micrographs"}}))
    config = effective_config(checkout, own)
    text = (checkout / "results" / "config.yaml").read_text()
    assert f"Its digest, {config_digest(config)}," in text


def test_unknown_key_is_named_in_one_line():
    config = copy.deepcopy(load("demo.yaml"))
    config["hypercolumns"]["densty"] = 0.2
    config["colour"] = "blue"
    problems = schema_problems(config, yaml.safe_load(Path(SCHEMA).read_text()))
    assert problems == [
        "top level: unknown key 'colour'; known keys: adaboost, balance, baseline, classifiers, custom_schemes, cv, "
        "data, demo, device, dictionary, evaluation, fusion, hierarchical, hypercolumns, k, k_values, logistic, model, "
        "predict, "
        "random_forest, report, "
        "representations, schemes, selection, uncertainty, vlad, weights, weights_cache, xgboost",
        "hypercolumns: unknown key 'densty'; known keys: batch_size, density, image_size, input_mode, max_side, seed, shards, taps"]


def test_bad_value_is_named():
    config = copy.deepcopy(load("demo.yaml"))
    config["data"]["layout"] = "flat"
    with pytest.raises(WorkflowError, match="flat"):
        validate(config, SCHEMA)
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    config = copy.deepcopy(load("demo.yaml"))
    config["hypercolumns"]["density"] = 1.5
    assert schema_problems(config, schema) == ["hypercolumns.density: 1.5 is greater than the maximum of 1"]


def test_rotation_averaging_names_only_balance_strategies_that_run():
    config = with_defaults({"data": {"dir": "x"}, "balance": {"strategies": ["none"]},
                            "evaluation": {"rotation_averaging": ["rotate"]}})
    assert consistency_problems(config) == [
        "evaluation.rotation_averaging: ['rotate'] not in balance.strategies ['none']; list strategies that run, "
        "or give true for all"]
    assert consistency_problems({**config, "evaluation": {"rotation_averaging": True}}) == []


def test_too_few_dictionary_vectors_per_centroid_are_refused_with_the_config():
    config = with_defaults({"data": {"dir": "x"}, "k_values": [10, 1500], "dictionary": {"sample_size": 2000}})
    assert consistency_problems(config) == [
        "dictionary.sample_size: 2000 vectors are too few for K = 1500 centroids (k / k_values): K-means needs at "
        "least 39 per centroid; raise sample_size to 58500 or more, or lower K"]
    at_the_minimum = with_defaults({"data": {"dir": "x"}, "k": 50, "k_values": [50], "dictionary": {"sample_size": 1950}})
    assert consistency_problems(at_the_minimum) == []
    assert consistency_problems({**at_the_minimum, "dictionary": {**at_the_minimum["dictionary"], "sample_size": 1949}})
    wide = with_defaults({"data": {"dir": "x"}, "vlad": {"pca_dim": 2000}})
    assert "vlad.pca_dim: 2000 exceeds the 1472 hypercolumn features" in consistency_problems(wide)[0]
    assert consistency_problems(with_defaults({"data": {"dir": "x"}})) == []


def test_library_defaults_and_names_agree_with_the_schema():
    """Config and library declare the method's defaults; they must be the same numbers and names."""
    from dataclasses import asdict

    from cntem import WEIGHTS_CACHE
    from cntem.classify import NAMES, settings_for
    from cntem.config import make_dictionary, make_extraction
    from cntem.dictionary import VisualDictionary
    from cntem.features import ExtractionSettings
    from cntem.model import ENCODERS

    defaults = with_defaults({"data": {"dir": "x"}})
    for name in NAMES:
        section = "baseline" if name == "linear_softmax" else name
        # As JSON (model.json) and YAML hold them: a tuple of the library is a list there.
        assert json.loads(json.dumps(asdict(settings_for(name)))) == defaults[section], name
        assert settings_for(name, defaults[section]) == settings_for(name), name
    schema = yaml.safe_load(Path(SCHEMA).read_text())["properties"]
    assert schema["classifiers"]["items"]["enum"] == [n for n in NAMES if n != "linear_softmax"]
    assert all("description" in spec for spec in schema["logistic"]["properties"].values())
    # the grammar (cntem.runs) knows every classifier, input mode and model encoder the schema and library know
    assert set(CLASSIFIERS) == set(NAMES) and list(INPUT_MODES) == schema["hypercolumns"]["properties"]["input_mode"]["enum"]
    assert {name for name, kind in KINDS.items() if kind.deployable} == set(ENCODERS)
    assert schema["selection"]["properties"]["candidates"]["items"]["pattern"] == candidate_pattern()
    assert all("description" in spec for spec in schema["representations"]["properties"].values())
    assert make_extraction(defaults["hypercolumns"], defaults["hypercolumns"]["batch_size"]) == ExtractionSettings()
    assert make_dictionary(50, defaults["dictionary"], defaults["vlad"]).describe() == VisualDictionary(50).describe()
    assert defaults["weights_cache"] == WEIGHTS_CACHE
