"""Which experiment results/ holds: a run of other data or other config files is refused, naming both."""
import pytest

from cntem.experiment import OtherExperimentError, check_experiment, experiment_of, record_experiment


def config(data_dir, demo=False):
    return {"data": {"dir": data_dir, "layout": "folders", "labels_csv": None},
            "demo": {"enabled": demo, "seed": 7, "size_range": [64, 64], "counts": {"Cl": 4}}}


def test_the_same_experiment_runs_in_its_folder_also_when_the_folder_is_copied(tmp_path, monkeypatch):
    for folder in (tmp_path / "a", tmp_path / "b"):
        (folder / "micrographs").mkdir(parents=True)
        (folder / "my.yaml").touch()
    monkeypatch.chdir(tmp_path / "a")
    record_experiment(experiment_of(config("micrographs"), [tmp_path / "a" / "my.yaml"]))
    check_experiment(experiment_of(config("micrographs"), [tmp_path / "a" / "my.yaml"]))
    (tmp_path / "b" / "results").mkdir()
    (tmp_path / "b" / "results" / "experiment.json").write_text((tmp_path / "a" / "results" / "experiment.json").read_text())
    monkeypatch.chdir(tmp_path / "b")  # paths inside the working folder are relative to it
    check_experiment(experiment_of(config("micrographs"), [tmp_path / "b" / "my.yaml"]))


def test_a_run_without_one_of_the_experiments_config_files_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record_experiment(experiment_of(config("/data/tem"), ["config/beyond.yaml", "my.yaml"]))
    check_experiment(experiment_of(config("/data/tem"), ["config/beyond.yaml", "my.yaml"]))
    with pytest.raises(OtherExperimentError) as refused:
        check_experiment(experiment_of(config("/data/tem"), ["my.yaml"]))
    assert str(refused.value) == (
        "results/ holds another experiment than this run's, and the run would write over it:\n"
        "  results/ (results/experiment.json): data /data/tem (layout folders), config file(s) config/beyond.yaml "
        "my.yaml\n"
        "  this run: data /data/tem (layout folders), config file(s) my.yaml\n"
        "To continue the experiment in results/, add --configfile config/beyond.yaml my.yaml to the command (after any "
        "targets: it takes every name after it). To run this one instead, first move the other's results away "
        "(mv results results-previous) or run it in another folder.")
    with pytest.raises(OtherExperimentError, match="this run: the demo's data results/demo/images"):
        check_experiment(experiment_of(config("results/demo/images", demo=True), ["config/demo.yaml"]))
