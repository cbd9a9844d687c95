"""config/README.md is generated from config/schema.yaml, and every key of the schema is described."""
from pathlib import Path

import yaml

from cntem.schema_doc import COMMAND, keys, render, undescribed

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def test_config_readme_is_current():
    committed = (REPO / "config" / "README.md").read_text()
    assert committed == render(SCHEMA), f"config/README.md is out of date: run `{COMMAND}`"


def test_every_key_has_a_description():
    assert undescribed(SCHEMA) == []


def test_nested_keys_have_their_type_default_and_allowed_values():
    text = render(SCHEMA)
    assert "| `hypercolumns.input_mode` | string | `squash` | `squash`, `center_crop`, `tiles`, `native` |" in text
    assert "| `data.dir` | string | required |" in text
    assert "| `demo.size_range` | list of integer | `[256, 1024]` | exactly 2 items; items: ≥ 32 |" in text
    assert all(f"| `{key.path}` |" in text for key in keys(SCHEMA))
