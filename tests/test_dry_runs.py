"""Fast checks that .ci/run makes before the rest of the suite: the workflow lints clean, and every shipped config
and every small config of .test/ builds its whole DAG (snakemake -n) from a folder holding the data it names."""
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_image

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
# The config files of each dry run, as given to --configfile; none: the demo, as the quick start runs it.
DRY_RUNS = {
    "demo": [],
    "niosh": ["config/niosh.yaml"],
    "niosh_without_labels": ["config/niosh.yaml", ".test/config_niosh_without_labels.yaml"],
    "beyond": ["config/beyond.yaml"],
    "tiny": [".test/config_tiny.yaml"],
    "own_data": [".test/config_own_data.yaml"],
    "beyond_on_own_data": ["config/beyond.yaml", ".test/config_own_data.yaml"],
}


def rules_of_the_workflow() -> set[str]:
    """Every rule the workflow defines, by name, but the target rule `hypercolumns` (the shards alone) and
    `extract_hypercolumns`, whose jobs a dry run cannot know before the checkpoint `hypercolumn_manifest` has run."""
    text = "".join(smk.read_text() for smk in (REPO / "rules").glob("*.smk"))
    names = set(re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M))
    names |= set(re.findall(r"^\s*use rule \w+ as (\w+) with:", text, re.M))
    return names - {"hypercolumns", "extract_hypercolumns"}


@functools.cache
def dry_run(name: str, folder: Path) -> subprocess.CompletedProcess:
    configs = DRY_RUNS[name]
    configfiles = ["--configfile", *(str(REPO / c) for c in configs)] if configs else []
    return subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", *configfiles], cwd=folder, capture_output=True, text=True)


@pytest.fixture(scope="module")
def data_folders(tmp_path_factory):
    """What the configs' data keys name, relative to the run's folder: the NIOSH folder and its labels file, the
    beyond config's micrographs, the own-data recipe's class sub-folders with a labels CSV and new images."""
    tmp_path = tmp_path_factory.mktemp("dry_runs")
    (tmp_path / "data" / "niosh").mkdir(parents=True)
    (tmp_path / "data" / "niosh_labels.csv").write_text("path,label\n")
    for root in (tmp_path / "data" / "micrographs", tmp_path / "micrographs"):
        for c, cls in enumerate(["Cl", "Fi", "Ma"]):
            for i in range(3):
                write_image(root / cls / f"{cls}{i}.tif", seed=10 * c + i, size=(40, 40))
    (tmp_path / "micrographs" / "labels.csv").write_text("path,label\n")
    write_image(tmp_path / "new_micrographs" / "new.tif", seed=99, size=(40, 40))
    return tmp_path


def test_lint_is_clean():
    result = subprocess.run(SNAKEMAKE + ["--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DRY_RUNS)
def test_config_builds_its_dag(name, data_folders):
    result = dry_run(name, data_folders)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rule all:" in result.stdout


def test_the_tiny_config_runs_every_rule(data_folders):
    planned = set(re.findall(r"^(?:rule|checkpoint) (\w+):", dry_run("tiny", data_folders).stdout, re.M))
    assert rules_of_the_workflow() - planned == set()
