import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")


def load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "niosh.yaml"])
def test_shipped_configs_are_valid(name):
    config = load(name)
    validate(config, SCHEMA, set_default=True)
    assert config["hypercolumns"]["density"] == 0.1 and config["k"] == 50


def test_defaults_are_the_papers():
    config = {"data": {"dir": "x"}}
    validate(config, SCHEMA, set_default=True)
    hc = config["hypercolumns"]
    assert hc["taps"] == ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]
    assert hc["image_size"] == 224 and hc["resize"] == "squash" and config["cv"]["folds"] == 5
    assert config["k"] == 50 and config["k_values"] == [10, 20, 50, 100, 200, 300]


def test_unknown_key_is_named():
    config = copy.deepcopy(load("config.yaml"))
    config["hypercolumns"]["densty"] = 0.2
    with pytest.raises(WorkflowError, match="densty"):
        validate(config, SCHEMA)


def test_bad_value_is_named():
    config = copy.deepcopy(load("config.yaml"))
    config["data"]["layout"] = "flat"
    with pytest.raises(WorkflowError, match="flat"):
        validate(config, SCHEMA)
    config = copy.deepcopy(load("config.yaml"))
    config["hypercolumns"]["density"] = 1.5
    with pytest.raises(WorkflowError, match="1.5"):
        validate(config, SCHEMA)
