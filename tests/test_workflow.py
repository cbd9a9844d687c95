"""End-to-end runs of the Snakemake DAG on tiny configs (random weights unless ../shared is present)."""
import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cntem.model import Model, ModelMismatchError
from cntem.backbone import load_weights
from cntem.dictionary import VisualDictionary
from cntem.features import ExtractionSettings
from cntem.pooled import PooledHypercolumnEncoder
from cntem.predict import prediction_columns
from cntem.quantify import ESTIMATORS
from cntem.runs import Method, Representation
from cntem.synthetic import NIOSH_PREFIX
from cntem.uncertainty import read_out_of_fold
from cntem.vlad import VladEncoder

from conftest import SHARED_WEIGHTS, write_image

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
WEIGHTS = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random"

TINY = {  # 3 classes x 8 images at 64 px, K in {4, 8}, 2 folds, the pooled hypercolumns too
    "data": {"dir": "results/demo/images", "layout": "niosh", "labels_csv": "results/demo/labels.csv"},
    "demo": {"enabled": True, "seed": 3, "size_range": [64, 64], "counts": {"Cl": 8, "Fi": 8, "Ma": 8}},
    "schemes": ["tiny"],
    "custom_schemes": {"tiny": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma", "MS": None, "NC": None, "GS": None,
                                "SP": None, "HDP": None, "PR": None, "O": None}},
    "cv": {"folds": 2, "seed": 1},
    "weights": WEIGHTS,
    "hypercolumns": {"image_size": 64, "batch_size": 8, "shards": 4},
    "dictionary": {"sample_size": 2000, "niter": 5},
    "k": 8, "k_values": [4, 8],
    "representations": {"pooled": True},
    "xgboost": {"n_estimators": 20}, "random_forest": {"n_estimators": 20}, "adaboost": {"n_estimators": 10},
    "model": {"scheme": "tiny"},
    "predict": {"input": "results/demo/images"},
    "report": {"tsne_perplexity": 5},
    "uncertainty": {"validation_samples": 3, "bootstrap": 50, "sample_sizes": [20, 100]},
}


def snakemake(workdir, config, *args, cores=("--cores", "2", "--max-threads", "1")):
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = SNAKEMAKE + ["--directory", str(workdir), *cores, *args, "--configfile", str(workdir / "config.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout + result.stderr


def jobs_of(log: str, rule: str) -> list[str]:
    """Wildcards of every job of `rule` in Snakemake's own job listing."""
    return re.findall(rf"rule {rule}:\n(?:.*\n)*?\s+wildcards: (.*)\n", log)


def accuracy_rows(path):
    return [r for r in csv.DictReader(open(path), delimiter="\t") if r["metric"] not in ("fit_seconds", "predict_seconds")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, TINY)
    return workdir


def job_counts(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: jobs per rule."""
    table = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "total"}


@pytest.mark.parametrize("pooled", [True, False])
def test_dry_run_shows_the_dag(tmp_path, pooled):
    counts = job_counts(snakemake(tmp_path, {**TINY, "representations": {"pooled": pooled}}, "-n"))
    # 2 balance strategies; runs: each strategy x (XGBoost at K = 8, baseline) + every classifier at K 4 and 8
    # on the rotated set = 9, + every classifier on the pooled hypercolumns of the rotated set = 3 when on;
    # dictionaries: (none, 8), (rotate, 4), (rotate, 8) x 2 folds
    assert counts["demo_dataset"] == counts["ingest"] == counts["hypercolumn_manifest"] == 1
    assert counts["balance_plan"] == 2 and counts["evaluate"] == 9 + 3 * pooled
    assert counts["fit_dictionary"] == counts["encode_vlad"] == 6
    assert counts["train_classifier"] == 14 + 6 * pooled and counts["train_baseline"] == 4
    assert counts.get("gather_pooled_hypercolumns", 0) == 2 * pooled  # one per fold
    assert counts["collect_metrics"] == counts["compare_methods"] == counts["figure_comparison"] == 1  # one scheme


# rotate runs 10 methods (K study 2 x 3, pooled 3, baseline), none 2 (XGBoost at K = 8, baseline); their fold jobs
# are 9 x 2 and 1 x 2 classifier fits, and one baseline fit per fold each
@pytest.mark.parametrize("averaged, evaluations, averaging_fits", [([], 0, 0), (["rotate"], 10, 18), (True, 12, 20)])
def test_rotation_averaging_adds_evaluations_not_fits(tmp_path, averaged, evaluations, averaging_fits):
    """Rotation averaging evaluates every run of each balance strategy it names again (every representation and
    classifier, the baseline too) from the same fold jobs, which also predict the rotated copies: as many fits and
    dictionaries, more evaluations."""
    config = {**TINY, "evaluation": {"rotation_averaging": averaged}}
    counts = job_counts(snakemake(tmp_path, config, "-n"))
    assert counts["evaluate"] == 12 + evaluations
    assert counts.get("train_classifier", 0) + counts.get("train_classifier_tta", 0) == 20
    assert counts.get("train_classifier_tta", 0) == averaging_fits
    assert counts.get("train_baseline", 0) + counts.get("train_baseline_tta", 0) == 4
    assert counts.get("train_baseline_tta", 0) == 2 * len(averaged if averaged is not True else "ab")
    assert counts["fit_dictionary"] == counts["encode_vlad"] == 6


def test_repeats_run_every_per_fold_job_per_split_and_select_per_split(tmp_path):
    """cv.repeats 2: each per-fold job once per (repeat, fold) split, the same runs; the nested selection one job per
    outer split of each scheme, one gathering job."""
    once = job_counts(snakemake(tmp_path, TINY, "-n"))
    twice = job_counts(snakemake(tmp_path, {**TINY, "cv": {**TINY["cv"], "repeats": 2}, "selection": {"nested": True}},
                                 "-n"))
    per_split = ("fit_dictionary", "encode_vlad", "train_classifier", "train_baseline", "gather_pooled_hypercolumns")
    assert all(twice[rule] == 2 * once[rule] for rule in per_split)
    assert twice["select_method"] == 4 and twice["nested_cv"] == 1 and "select_method" not in once
    others = lambda counts: {rule: n for rule, n in counts.items()  # noqa: E731
                             if rule not in per_split + ("select_method", "nested_cv")}
    assert others(twice) == others(once)  # the same runs, figures and model


def test_end_to_end_outputs(tiny_run):
    results = tiny_run / "results"
    metrics = list(csv.DictReader(open(results / "metrics.tsv"), delimiter="\t"))
    runs = {(r["balance"], r["method"]) for r in metrics}
    assert ("rotate", "squash-k8/xgboost") in runs and ("none", "squash-top/linear_softmax") in runs
    assert {("rotate", f"squash-k{k}/{c}") for c in ("random_forest", "adaboost") for k in (4, 8)} <= runs
    pooled = {run for run in runs if Method.parse(run[1]).representation.kind == "pooled"}
    assert pooled == {("rotate", f"squash-pooled/{c}") for c in ("xgboost", "random_forest", "adaboost")}
    assert all(Method.parse(r["method"]).columns().items() <= r.items() for r in metrics)  # one name, its parts
    accuracy = {(r["balance"], r["method"]): float(r["mean"]) for r in metrics if r["metric"] == "accuracy"}
    assert all(r["n_folds"] == "2" and r["n_repeats"] == "1" for r in metrics)
    assert {r["repeat_std"] for r in metrics if r["metric"] == "accuracy"} == {"0.000000"}  # one repeat: no spread
    # three synthetic classes, 24 images of 64 px, 2 folds: every method above chance (1/3), on average clearly
    assert min(accuracy.values()) > 0.4 and np.mean(list(accuracy.values())) > 0.55
    comparison = list(csv.DictReader(open(results / "comparison.tsv"), delimiter="\t"))
    # one row per evaluated run (12, as in the leakage check), best first, with metrics.tsv's accuracies
    assert len(comparison) == 12 and {(r["balance"], r["method"]) for r in comparison} == runs
    assert [float(r["accuracy_mean"]) for r in comparison] == sorted(accuracy.values(), reverse=True)
    assert comparison[0]["rank"] == "1" and {r["input_mode"] for r in comparison} == {"squash"}
    pooled_xgboost = next(r for r in comparison if r["method"] == "squash-pooled/xgboost")
    assert pooled_xgboost["label"] == "pooled hypercolumns"
    assert float(pooled_xgboost["accuracy_mean"]) == accuracy[("rotate", "squash-pooled/xgboost")]
    leakage = (results / "leakage_check.txt").read_text()
    assert leakage.startswith("no leakage in 24 (run, fold) pairs")  # 12 runs x 2 folds, the pooled ones too
    assert ("ok  tiny/rotate/squash-pooled/xgboost/fold1: 12 validation images unseen by classifier, early stopping"
            in leakage)
    for fig in ["accuracy_grid", "confusion_matrices", "tsne", "k_study", "fit_time", "misclassified", "activations",
                "comparison"]:
        assert (results / "figures" / "tiny" / f"{fig}.png").stat().st_size > 5000, fig
        assert (results / "figures" / "tiny" / f"{fig}.pdf").exists(), fig
    assert (results / "tiny" / "contact_sheet.png").exists()
    # per-fold targets are separate files: each (K, fold) is its own DAG node
    for k in (4, 8):
        for fold in (0, 1):
            assert (results / "tiny" / "rotate" / Representation("squash", "vlad", k).name / f"fold{fold}" /
                    "vlad.h5").exists()


def test_report_model_and_predictions(tiny_run):
    snakemake(tiny_run, TINY, "--report", "results/report.html", cores=())  # as the README says: no --cores
    html = (tiny_run / "results" / "report.html").read_text(errors="ignore")
    assert "accuracy_grid.png" in html and "metrics.tsv" in html and "software_versions.tsv" in html
    assert "comparison.tsv" in html and "comparison.png" in html
    assert "config.yaml" in html  # the effective config
    model = Model.load(tiny_run / "results" / "model" / "tiny")
    assert model.classes == ["Cl", "Fi", "Ma"] and model.encoder.dictionary.k == 8
    assert (tiny_run / "results" / "model" / "tiny" / "classifier.ubj").exists()
    rows = list(csv.DictReader(open(tiny_run / "results" / "predictions" / "predictions.csv")))
    assert len(rows) == 24 and list(rows[0]) == prediction_columns(["Cl", "Fi", "Ma"])
    shares = list(csv.DictReader(open(tiny_run / "results" / "predictions" / "predictions_shares.csv")))
    assert len(shares) == 5 * 3 and {s["estimator"] for s in shares} == set(ESTIMATORS)
    default = [s for s in shares if s["default"] == "yes"]
    assert sum(int(s["images"]) for s in default) == 24 and abs(sum(float(s["share"]) for s in default) - 1) < 1e-3
    assert all(float(s["lower"]) <= float(s["share"]) <= float(s["upper"]) for s in shares)
    assert "reliability.png" in html and "share_validation.tsv" in html and "predictions_shares.png" in html


def test_console_predict_and_refusal_of_other_weights(tiny_run, tmp_path):
    model = tiny_run / "results" / "model" / "tiny"
    image = next((tiny_run / "results" / "demo" / "images").glob("CNT-Fiber-*.tif"))
    out = tmp_path / "p.csv"
    done = subprocess.run([sys.executable, "-m", "cntem.cli", "predict", "--model", str(model), "--out", str(out),
                           str(image)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 images classified" in done.stdout and out.exists()
    other = "random" if WEIGHTS != "random" else str(SHARED_WEIGHTS)
    if other != "random" and not SHARED_WEIGHTS.exists():
        pytest.skip("only one set of weights available")
    with pytest.raises(ModelMismatchError, match="trained on other features"):
        Model.load(model).check_compatible(load_weights(other))
    with pytest.raises(ModelMismatchError, match="taps"):
        Model.load(model).check_compatible(load_weights(WEIGHTS), taps=["block1_conv2"])
    with pytest.raises(ModelMismatchError, match="input mode tiles differs from the model.s squash"):
        Model.load(model).check_compatible(load_weights(WEIGHTS), input_mode="tiles")
    refused = subprocess.run([sys.executable, "-m", "cntem.cli", "predict", "--model", str(model), "--weights",
                              other, str(image)], capture_output=True, text=True)
    assert refused.returncode == 2 and "trained on other features" in refused.stderr


def test_uncertainty_is_validated_on_held_out_folds_and_travels_with_the_model(tiny_run, tmp_path):
    import json
    import shutil

    from cntem import ActionableError
    from cntem.io import read_table

    tables = tiny_run / "results" / "uncertainty" / "tiny"
    before, after = read_table(tables / "calibration.tsv")
    assert (before["stage"], after["stage"]) == ("before", "after") and before["accuracy"] == after["accuracy"]
    assert 0 <= float(after["ece"]) <= 1 and float(after["temperature"]) > 0
    coverage = read_table(tables / "coverage.tsv")
    assert [r["class"] for r in coverage] == ["all", "Cl", "Fi", "Ma"]
    assert coverage[0]["micrographs"] == "24"  # one score per micrograph: the unrotated validation rows of 2 folds
    assert sum(int(r["micrographs"]) for r in coverage[1:]) == 24 and 0 <= float(coverage[0]["coverage"]) <= 1
    summary = read_table(tables / "share_validation.tsv")
    defaults = {r["estimator"] for r in summary if r["default"] == "yes"}
    # 2 folds x 2 scenarios x 2 sizes x 3 samples, each with 5 estimators x 3 classes
    assert len(read_table(tables / "share_validation_samples.tsv")) == 2 * 2 * 2 * 3 * 5 * 3
    bundle = tiny_run / "results" / "model" / "tiny"
    model = Model.load(bundle)
    assert defaults == {model.uncertainty.default_estimator}
    assert model.uncertainty.run_["method"] == "squash-k8/xgboost"
    # an older bundle, or one whose uncertainty.json is missing or another model's, is refused with the command
    command = re.escape("snakemake --cores all results/model/old/uncertainty.json --configfile <your config>")
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    (old / "uncertainty.json").unlink()
    with pytest.raises(ActionableError, match=command):
        Model.load(old)
    shutil.copy(bundle / "uncertainty.json", old)
    meta = json.loads((old / "model.json").read_text())
    (old / "model.json").write_text(json.dumps({**meta, "trained_on": {}}))
    with pytest.raises(ActionableError, match="another model.json.*" + command):
        Model.load(old)
    (old / "model.json").write_text(json.dumps({**meta, "format": "cntem-model-4"}))
    with pytest.raises(ActionableError, match="cntem-model-4.*" + command):
        Model.load(old)


def dom_of(page: Path) -> str:
    """The page as Debian's chromium renders it headless, after its load event."""
    import os
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_sample_page_loads_in_a_browser_with_its_pictures_and_the_csvs_numbers(tiny_run):
    from html.parser import HTMLParser

    out = tiny_run / "results" / "predictions"

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.body, self.images, self.tables, self._table = {}, [], {}, None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "body":
                self.body = attrs
            elif tag == "img":
                self.images.append(attrs["src"])
            elif tag == "table":
                self._table = self.tables.setdefault(attrs["id"], [])
            elif tag == "tr" and self._table is not None:
                self._table.append({})
            elif tag == "td":
                self._column = attrs["data-column"]
                self._table[-1][self._column] = ""

        def handle_endtag(self, tag):
            if tag == "table":
                self._table = None
            elif tag == "td":
                self._column = None

        def handle_data(self, data):
            if self._table is not None and getattr(self, "_column", None):
                self._table[-1][self._column] += data

    page = Page()
    page.feed(dom_of(out / "predictions.html"))
    # 24 thumbnails, the shares and review figures, the model's two validation figures: all decoded by the browser
    assert len(page.images) == 24 + 2 + 2 and all((out / src).is_file() for src in page.images)
    assert page.body["data-images-loaded"] == "28" and page.body["data-images-broken"] == "0"
    shown = lambda table: [r for r in page.tables[table] if r]  # noqa: E731  (the header row has no cells)
    columns = ["estimator", "class", "share", "lower", "upper", "default", "images"]
    shares = list(csv.DictReader(open(out / "predictions_shares.csv")))
    assert shown("shares") == [{c: r[c] for c in columns} for r in shares] and shares[0]["default"] == "yes"
    review = list(csv.DictReader(open(out / "predictions_review.csv")))
    assert shown("review") == [{c: r[c] for c in ["file", "class", "probability", "set", "doubt", "note"]}
                               for r in review]
    assert [float(r["doubt"]) for r in review] == sorted((float(r["doubt"]) for r in review), reverse=True)
    predictions = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted(r["file"] for r in review) == sorted(r["file"] for r in predictions if r["review"] == "yes")


def test_metrics_are_identical_run_to_run(tiny_run):
    first = accuracy_rows(tiny_run / "results" / "metrics.tsv")
    log = snakemake(tiny_run, TINY, "--forcerun", "fit_dictionary", "train_baseline", "--until", "collect_metrics")
    ran = job_counts(log)
    assert ran["fit_dictionary"] == 6 and ran["train_classifier"] == 14 and ran["train_baseline"] == 4
    assert accuracy_rows(tiny_run / "results" / "metrics.tsv") == first


def entries_extracted(workdir, shards) -> int:
    """Entries the extraction jobs of `shards` computed, from their logs."""
    logs = workdir / "results" / "logs" / "hypercolumns" / "squash"
    return sum(int(re.search(r"(\d+) entries \(\d+ views\) on", (logs / f"shard-{s}.log").read_text())[1])
               for s in shards)


def test_adding_and_removing_images_extracts_only_the_new_entries(tmp_path):
    """The issue's case: 3 balanced classes of 6 and the default balance strategies [none, rotate]. Adding 3 images
    makes the other classes rotated (their rotations are new entries): only new entries are computed, in new shards,
    and no extracted shard is redone. Removing them again balances the classes: nothing runs, the rotations are kept."""
    data, store = tmp_path / "data", tmp_path / "results" / "hypercolumns" / "squash"
    config = {"data": {"dir": str(data), "layout": "folders"}, "schemes": ["cnt3"],
              "custom_schemes": {"cnt3": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma"}}, "cv": {"folds": 2},
              "weights": "random", "hypercolumns": {"image_size": 32, "batch_size": 8, "shards": 2}}

    def rerun():
        """(shards extracted, entries they computed, entries of the manifest); checks that no shard was redone."""
        shards = {p.name: p.stat().st_mtime_ns for p in store.glob("shard-*.h5")}
        log = snakemake(tmp_path, config, "hypercolumns")
        ran = {w.rpartition("shard=")[2] for w in jobs_of(log, "extract_hypercolumns")}
        assert not ran & {name[6:9] for name in shards}
        assert all(store.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in shards.items())
        return ran, entries_extracted(tmp_path, ran), len(list(csv.DictReader(open(store / "manifest.tsv"),
                                                                                delimiter="\t")))

    for c, cls in enumerate(["Cl", "Fi", "Ma"]):
        for i in range(6):
            write_image(data / cls / f"{cls}{i:02d}.tif", seed=100 * c + i, size=(40, 40))
    listing = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    ran, computed, entries = rerun()
    assert len(ran) == 2 and computed == entries == 18  # balanced: nothing rotated
    added = [data / "Fi" / f"Fi{i:02d}.tif" for i in range(6, 9)]
    for i, path in enumerate(added):
        write_image(path, seed=900 + i, size=(40, 40))
    ran, computed, flipped = rerun()
    assert len(ran) == 2 and computed == flipped - 18 and flipped >= 3 + 4 * 12  # Cl and Ma rotated now
    for path in added:
        path.unlink()
    ran, computed, entries = rerun()
    assert not ran and entries == 18
    assert f"{flipped - 18} extracted entries are not used" in (
        tmp_path / "results" / "logs" / "hypercolumns" / "squash" / "manifest.log").read_text()
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == listing  # input folder untouched


def test_dihedral_averaging_predicts_each_validation_image_in_its_eight_orientations(tiny_run, tmp_path):
    """evaluation.averaging_group d8 on a finished run (3 balanced classes: no image rotated yet): the store adds each
    image's other 7 orientations and computes nothing it held, and the fold jobs of method <method>-d8 average each
    validation image's 8 orientations, no other image's."""
    import shutil

    from cntem.folds import VAL_ROTATED
    from cntem.io import read_table
    from cntem.tta import GROUPS

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)  # modification times kept: the run's outputs stay up to date
    config = {**TINY, "evaluation": {"rotation_averaging": ["rotate"], "averaging_group": "d8"}}
    method = "squash-pooled/xgboost-d8"
    manifest_path = work / "results" / "hypercolumns" / "squash" / "manifest.tsv"
    held = {(r["id"], int(r["rotation"])) for r in read_table(manifest_path)}
    log = snakemake(work, config, f"results/tiny/rotate/{method}/metrics.json")
    manifest = {(r["id"], int(r["rotation"])) for r in read_table(manifest_path)}
    ids = {i for i, _ in manifest}
    assert held == {(i, 0) for i in ids} and manifest == {(i, o) for i in ids for o in GROUPS["d8"]}
    shards = {w.rpartition("shard=")[2] for w in jobs_of(log, "extract_hypercolumns")}
    assert entries_extracted(work, shards) == len(manifest - held) == 7 * len(ids)  # nothing it held
    plan = read_table(work / "results" / "tiny" / "rotate" / "plan.tsv")
    for fold in range(2):
        job = work / "results" / "tiny" / "rotate" / "squash-pooled" / f"fold{fold}" / "xgboost"
        averaged, plain = read_table(job / "predictions-d8.tsv"), read_table(job / "predictions.tsv")
        val = [r["id"] for r in plan if r["role"] == "val" and int(r["fold"]) == fold]
        assert [r["id"] for r in averaged] == [r["id"] for r in plain] and sorted(val) == sorted(r["id"] for r in plain)
        assert any(a["p_Cl"] != p["p_Cl"] for a, p in zip(averaged, plain))  # the copies change the answer
        copies = {(r["id"], int(r["rotation"])) for r in plan if r["role"] == VAL_ROTATED and int(r["fold"]) == fold}
        assert copies == {(i, o) for i in val for o in GROUPS["d8"][1:]}
    assert not list(work.rglob("predictions-rot4.tsv"))


def test_invalid_config_names_the_key_in_one_line(tmp_path):
    bad = {**TINY, "hypercolumns": {"density": 0.1, "imagesize": 64}, "colour": "blue"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(SNAKEMAKE + ["--directory", str(tmp_path), "-n", "--configfile", str(tmp_path / "config.yaml")],
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "invalid config (2 problem(s))" in output
    assert "top level: unknown key 'colour'" in output and "hypercolumns: unknown key 'imagesize'" in output
    assert len(output.splitlines()) < 10 and "Traceback" not in output  # not the whole schema


def test_a_selection_candidate_that_is_not_cross_validated_is_refused(tmp_path):
    bad = {**TINY, "selection": {"nested": True, "candidates": ["squash-k8/xgboost", "squash-k50/xgboost"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(SNAKEMAKE + ["--directory", str(tmp_path), "-n", "--configfile",
                                         str(tmp_path / "config.yaml")], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "invalid config (1 problem(s))" in output
    assert "selection.candidates: 'squash-k50/xgboost' is not cross-validated at the main balance strategy" in output


def test_editing_predict_or_report_settings_retrains_nothing(tiny_run):
    edited = {**TINY, "predict": {"input": "results/demo/images/CNT-Fiber-0001.tif"},
              "report": {"tsne_perplexity": 5, "seed": 3}, "hypercolumns": {**TINY["hypercolumns"], "batch_size": 4}}
    plan = snakemake(tiny_run, edited, "-n")
    for rule in ("extract_hypercolumns", "fit_dictionary", "encode_vlad", "train_classifier", "train_model",
                 "fit_uncertainty"):
        assert f"rule {rule}:" not in plan, rule
    assert "rule predict:" in plan and "rule figure_tsne:" in plan  # what those settings do change


# Per representation: its fold file, its encoder as cross-validation's fold 0 has it, and how closely features
# recomputed from the image files match: VLAD of float16 hypercolumns either way; the pooled hypercolumns,
# reduced in float32 from the network's maps in both passes, to float32 round-off (identical on the
# development machine; a CPU whose convolution algorithm depends on the batch size could differ in the last bit).
REPRESENTATIONS = {
    "squash-k8": ("vlad.h5", lambda fold, store: VladEncoder(VisualDictionary.load(fold / "dictionary.h5")),
                  {"atol": 2e-3}),
    "squash-pooled": ("pooled_hypercolumns.h5", lambda fold, store: PooledHypercolumnEncoder(store.taps),
                      {"rtol": 1e-5, "atol": 0}),
}


@pytest.mark.parametrize("method", REPRESENTATIONS)
def test_prediction_path_agrees_with_cross_validation(tiny_run, weights, method):
    """One method, one code path: a fold's encoder (VLAD: its dictionary) and classifier, deployed as a model,
    give for the fold's validation images (read from their files) the features and probabilities
    cross-validation computed."""
    from cntem.config import make_classifier
    from cntem.encoded import load_encoded
    from cntem.evaluate import fit_and_predict_fold
    from cntem.io import read_table
    from cntem.predict import predict_images
    from cntem.shards import HypercolumnStore

    fold_file, fold_encoder, tolerance = REPRESENTATIONS[method]
    results = tiny_run / "results"
    fold = results / "tiny" / "rotate" / method / "fold0"
    splits, _ = load_encoded(fold / fold_file)
    effective = yaml.safe_load((results / "config.yaml").read_text())
    group_of = {r["id"]: r["group"] for r in read_table(results / "tiny" / "folds.tsv")}
    classifier = make_classifier("xgboost", effective["xgboost"], ["Cl", "Fi", "Ma"])
    rows, _ = fit_and_predict_fold(classifier, splits["train"], splits["val"], group_of, "0")
    assert rows == read_table(fold / "xgboost" / "predictions.tsv")  # the rule's fit, repeated exactly
    with HypercolumnStore(sorted((results / "hypercolumns" / "squash").glob("shard-*.h5"))) as store:
        model = Model.from_parts(fold_encoder(fold, store), classifier, store)
        if method == "squash-pooled":  # the fold file holds the shards' values, unchanged
            val = [(i, int(r)) for i, r in zip(splits["val"]["ids"], splits["val"]["rotations"])]
            np.testing.assert_array_equal(splits["val"]["X"], store.pooled_hypercolumns(val))
    # the deployed bundle's uncertainty (fitted on k8/xgboost's out-of-fold predictions): the same object below
    model.uncertainty = Model.load(results / "model" / "tiny").uncertainty
    model.save(tiny_run / f"fold0_{method}_model" / "model.json")
    deployed = Model.load(tiny_run / f"fold0_{method}_model")
    assert deployed.encoder.describe() == model.encoder.describe()
    np.testing.assert_array_equal(deployed.predict_proba(splits["val"]["X"]),
                                  classifier.predict_proba(splits["val"]["X"]))
    path_of = {r["id"]: r["path"] for r in read_table(results / "images.tsv")}
    entries = [{"id": i, "rotation": 0, "path": path_of[i]} for i in splits["val"]["ids"]]
    from_files = deployed.encode_images(entries, weights, torch.device("cpu"), batch_size=3)
    assert from_files.shape == splits["val"]["X"].shape
    np.testing.assert_allclose(from_files, splits["val"]["X"], **tolerance)
    predicted, _ = predict_images(deployed, [e["path"] for e in entries], weights, torch.device("cpu"))
    cv = read_table(fold / "xgboost" / "predictions.tsv")
    assert [p["class"] for p in predicted] == [r["predicted"] for r in cv]
    # cross-validation's probabilities through the bundle's Uncertainty, as fit_uncertainty reads them
    assessed = deployed.uncertainty.assess(read_out_of_fold([fold / "xgboost" / "predictions.tsv"], ["Cl", "Fi", "Ma"],
                                                            group_of)["proba"])
    for p, calibrated, in_set, review in zip(predicted, assessed["proba"], assessed["sets"], assessed["review"]):
        assert all(abs(float(p[f"p_{c}"]) - v) < 1e-3 for c, v in zip(("Cl", "Fi", "Ma"), calibrated))
        assert p["set"] == ";".join(c for c, inside in zip(("Cl", "Fi", "Ma"), in_set) if inside)
        assert p["review"] == ("yes" if review else "no")


def test_a_model_of_pooled_hypercolumns_is_trained_and_predicts(tiny_run, tmp_path):
    """model.method squash-pooled/logistic retrains the model (nothing upstream, no dictionary) and cross-validates
    its run for its uncertainty, records its method, and the predict target classifies through it."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)  # modification times kept: the run's outputs stay up to date
    pooled = {**TINY, "model": {"scheme": "tiny", "method": "squash-pooled/logistic"}}
    # its uncertainty is fitted on its own run's out-of-fold predictions: squash-pooled/logistic's 2 folds, new here
    assert job_counts(snakemake(work, pooled, "results/predictions/predictions.csv")) == {
        "train_classifier": 2, "train_model": 1, "fit_uncertainty": 1, "predict": 1}
    folder = work / "results" / "model" / "tiny"
    meta = yaml.safe_load((folder / "model.json").read_text())
    assert meta["encoder"] == {"representation": "pooled", "taps": list(ExtractionSettings().taps)}
    model = Model.load(folder)
    assert isinstance(model.encoder, PooledHypercolumnEncoder) and model.encoder.dim == 2 * 1472
    assert model.classifier.name == "logistic"
    assert meta["settings"]["method"] == "squash-pooled/logistic" and meta["settings"]["representation_settings"] == {}
    rows = list(csv.DictReader(open(work / "results" / "predictions" / "predictions.csv")))
    class_of_prefix = {NIOSH_PREFIX[c]: c for c in ("Cl", "Fi", "Ma")}
    truth = [class_of_prefix[Path(r["file"]).stem.rsplit("-", 1)[0]] for r in rows]
    assert len(rows) == 24 and np.mean([r["class"] == t for r, t in zip(rows, truth)]) > 0.8  # its training images


def test_auto_deploys_the_selections_winner_and_records_why(tiny_run, tmp_path):
    """model.method auto: the nested selection runs per outer split on the training rows only, and the model is the
    candidate with the best plain cross-validated accuracy, retrained alone (no cross-validation job reruns)."""
    import json
    import shutil

    from cntem.io import read_table

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)  # modification times kept: the run's outputs stay up to date
    candidates = ["squash-k8/xgboost", "squash-k4/random_forest", "squash-pooled/xgboost", "squash-pooled/random_forest"]
    auto = {**TINY, "selection": {"candidates": candidates}, "model": {"scheme": "tiny", "method": "auto"}}
    ran = job_counts(snakemake(work, auto, "results/model/tiny/uncertainty.json"))
    assert ran["select_method"] == 2 and ran["nested_cv"] == ran["train_model"] == ran["fit_uncertainty"] == 1
    assert not {"fit_dictionary", "encode_vlad", "train_classifier", "train_baseline", "evaluate"} & set(ran)
    results = work / "results"
    comparison = {r["method"]: r for r in read_table(results / "comparison.tsv") if r["balance"] == "rotate"}
    plain = [comparison[n] for n in candidates]
    best = max(range(4), key=lambda i: (float(plain[i]["accuracy_mean"]), float(plain[i]["macro_f1_mean"]), -i))
    settings = json.loads((results / "model" / "tiny" / "model.json").read_text())["settings"]
    selection = settings["selection"]
    assert settings["method"] == selection["plain"]["winner"] == candidates[best]
    assert {n: s["accuracy"] for n, s in selection["plain"]["scores"].items()} == {
        n: float(r["accuracy_mean"]) for n, r in zip(candidates, plain)}
    winner = Method.parse(candidates[best])
    model = Model.load(results / "model" / "tiny")
    assert model.classifier.name == winner.classifier
    assert model.uncertainty.run_["method"] == winner.name
    assert model.encoder.describe()["representation"] == winner.representation.kind
    nested = read_table(results / "nested.tsv")[0]
    assert nested["plain_winner"] == candidates[best] and nested["n_candidates"] == "4"
    assert float(nested["nested_accuracy_mean"]) == pytest.approx(selection["nested"]["accuracy"]["mean"], abs=1e-6)
    plan = read_table(results / "tiny" / "rotate" / "plan.tsv")
    for split in (0, 1):
        outer = json.loads((results / "tiny" / "nested" / f"fold{split}.json").read_text())
        val_ids = {r["id"] for r in plan if r["fold"] == str(split) and r["role"] == "val"}
        seen = {i for fold in outer["inner"]["folds"] for part in ("train_ids", "val_ids") for i in fold[part]}
        assert seen and not seen & val_ids and outer["candidates"] == candidates
        assert outer["chosen"] == selection["nested"]["choices"][split] and outer["outer"]["n_val"] == len(val_ids)
        assert outer["leakage_check"][0].startswith(f"ok  tiny/nested/fold{split}: 12 validation images unseen")


FUSIONS = ["squash-k8+squash-pooled/xgboost", "squash-k8+squash-pooled/mean-xgboost",
           "squash-k8+squash-pooled/stack-xgboost", "squash-k8/mean-xgboost+random_forest"]


def test_fusions_are_cross_validated_beside_their_members_selected_and_deployed(tiny_run, tmp_path, weights):
    """fusion.methods: the early fusion fits one classifier per fold on the members' fold files side by side, the late
    ones combine the members' fold predictions (the mean exactly, the stack fitted inside the training fold); all are
    evaluated, leakage-checked and compared beside their members, and scored by the nested selection; the stacked
    one is deployed and predicts, and each kind deployed from a fold agrees with cross-validation."""
    import json
    import shutil

    from cntem.io import read_table

    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)  # modification times kept: the run's outputs stay up to date
    candidates = ["squash-k8/xgboost", "squash-pooled/xgboost", *FUSIONS]
    config = {**TINY, "fusion": {"methods": FUSIONS}, "selection": {"nested": True, "candidates": candidates},
              "model": {"scheme": "tiny", "method": FUSIONS[2]}}
    ran = job_counts(snakemake(work, config, "results/comparison.tsv", "results/leakage_check.txt",
                               "results/nested.tsv", "results/predictions/predictions.csv"))
    assert ran["train_classifier"] == 2 and ran["late_fusion"] == 6 and ran["evaluate"] == 4  # 2 folds each
    assert ran["select_method"] == 2 and not {"fit_dictionary", "encode_vlad", "extract_hypercolumns"} & set(ran)
    assert ran["train_model"] == ran["predict"] == 1  # the stacked fusion deployed: one encoder per representation
    model = Model.load(work / "results" / "model" / "tiny")
    assert model.method.name == FUSIONS[2] and [p.encoder.describe()["representation"] for p in model.parts] == [
        "vlad", "pooled"]
    predicted = list(csv.DictReader(open(work / "results" / "predictions" / "predictions.csv")))
    truth = {NIOSH_PREFIX[c]: c for c in ("Cl", "Fi", "Ma")}
    assert len(predicted) == 24 and np.mean([truth[Path(r["file"]).stem.rsplit("-", 1)[0]] == r["class"]
                                             for r in predicted]) > 0.6  # its training images
    results = work / "results"
    comparison = {r["method"]: r for r in read_table(results / "comparison.tsv")}
    assert set(FUSIONS) | {"squash-k8/xgboost", "squash-pooled/xgboost", "squash-k8/random_forest"} <= set(comparison)
    assert comparison[FUSIONS[0]]["label"] == "VLAD of hypercolumns, K=8 (squash) + pooled hypercolumns (squash)"
    assert comparison[FUSIONS[2]]["label"] == "stack of squash-k8/xgboost + squash-pooled/xgboost"
    assert comparison[FUSIONS[1]]["classifier"] == "mean-xgboost" and comparison[FUSIONS[1]]["input_mode"] == "squash"
    fold = results / "tiny" / "rotate" / "squash-k8+squash-pooled" / "fold1"
    assert json.loads((fold / "xgboost" / "fit.json").read_text())["standardised_blocks"] == [8 * 1472, 2 * 1472]
    members = [read_table(results / "tiny" / "rotate" / rep / "fold1" / "xgboost" / "predictions.tsv")
               for rep in ("squash-k8", "squash-pooled")]
    for row, *member in zip(read_table(fold / "mean-xgboost" / "predictions.tsv"), *members):
        assert row["p_Fi"] == f"{(float(member[0]['p_Fi']) + float(member[1]['p_Fi'])) / 2:.6f}"
    leakage = (results / "leakage_check.txt").read_text()
    assert ("ok  tiny/rotate/squash-k8+squash-pooled/stack-xgboost/fold1: 12 validation images unseen by "
            "classifier, dictionary/PCA, squash-k8/xgboost classifier, squash-k8/xgboost early stopping, "
            "squash-pooled/xgboost classifier, squash-pooled/xgboost early stopping, stacking combiner, "
            "stacking inner fits") in leakage
    plan = read_table(results / "tiny" / "rotate" / "plan.tsv")
    stack = json.loads((fold.parent / "fold1" / "stack-xgboost" / "fit.json").read_text())
    val_ids = {r["id"] for r in plan if r["fold"] == "1" and r["role"] == "val"}
    assert stack["train_ids"] and not set(stack["train_ids"]) & val_ids
    assert not {i for f in stack["inner_folds"] for part in f.values() for i in part} & val_ids
    nested = read_table(results / "nested.tsv")[0]
    assert nested["n_candidates"] == str(len(candidates))
    outer = json.loads((results / "tiny" / "nested" / "fold1.json").read_text())
    assert list(outer["inner_scores"]) == candidates and outer["chosen"] in candidates
    assert_deployed_fusions_agree_with_cross_validation(results, tmp_path, weights)


def assert_deployed_fusions_agree_with_cross_validation(results, tmp_path, weights):
    """Fold 1's fused methods (FUSIONS: early, mean, stack) deployed as FusedModels (their parts' encoders from the
    fold, the early head or the members refitted as their fold jobs were, the late fusion's combiner as the fold job
    saved it) compute from the image files the features and probabilities cross-validation computed from the
    shards."""
    import joblib

    from cntem.config import make_classifier
    from cntem.fused_model import FusedModel
    from cntem.fusion import BlockStandardized, for_blocks, load_encoded_parts
    from cntem.io import read_table
    from cntem.predict import predict_images
    from cntem.shards import HypercolumnStore

    effective = yaml.safe_load((results / "config.yaml").read_text())
    group_of = {r["id"]: r["group"] for r in read_table(results / "tiny" / "folds.tsv")}
    path_of = {r["id"]: r["path"] for r in read_table(results / "images.tsv")}
    singles = Method.parse(FUSIONS[0]).representation.singles
    folds = [results / "tiny" / "rotate" / r.name / "fold1" for r in singles]
    splits, blocks = load_encoded_parts([f / r.encoded_file for f, r in zip(folds, singles)])
    train, val = splits["train"], splits["val"]

    def fitted(columns):
        """A classifier fitted as the fold job of these columns fitted it."""
        classifier = for_blocks(make_classifier("xgboost", effective["xgboost"], ["Cl", "Fi", "Ma"]),
                                [b - a for a, b in columns])
        x = np.concatenate([train["X"][:, a:b] for a, b in columns], axis=1)
        classifier.fit(x, train["y"], [group_of[i] for i in train["ids"]])
        return classifier

    columns = [(0, blocks[0]), (blocks[0], sum(blocks))]
    for fusion in map(Method.parse, FUSIONS[:3]):
        fold = results / "tiny" / "rotate" / fusion.representation.name / "fold1" / fusion.estimator
        with HypercolumnStore(sorted((results / "hypercolumns" / "squash").glob("shard-*.h5"))) as store:
            encoders = [VladEncoder(VisualDictionary.load(folds[0] / "dictionary.h5")),
                        PooledHypercolumnEncoder(store.taps)]
            if fusion.combiner:
                parts = [Model.from_parts(e, fitted([c]), store) for e, c in zip(encoders, columns)]
                model = FusedModel(fusion, parts, combiner=joblib.load(fold / "combiner.joblib"))
            else:
                head = fitted(columns)
                assert isinstance(head, BlockStandardized)
                model = FusedModel(fusion, [Model.from_parts(e, None, store) for e in encoders], head=head)
        # the deployed bundle's uncertainty, as a bundle needs one: its calibration is checked against CV's below
        model.uncertainty = Model.load(results / "model" / "tiny").uncertainty
        model.save(tmp_path / fusion.estimator / "model.json")
        deployed = Model.load(tmp_path / fusion.estimator)
        assert isinstance(deployed, FusedModel) and deployed.method == fusion
        cv = read_table(fold / "predictions.tsv")
        assert [r["predicted"] for r in cv] == [deployed.classes[j] for j in deployed.predict_proba(val["X"]).argmax(1)]
        entries = [{"id": i, "rotation": 0, "path": path_of[i]} for i in val["ids"]]
        np.testing.assert_allclose(deployed.encode_images(entries, weights, torch.device("cpu"), batch_size=3),
                                   val["X"], atol=2e-3)
        predicted, _ = predict_images(deployed, [e["path"] for e in entries], weights, torch.device("cpu"))
        assert [p["class"] for p in predicted] == [r["predicted"] for r in cv], fusion.name
        # cross-validation's probabilities through the same calibration as prediction's
        calibrated = deployed.uncertainty.assess(np.array([[float(r[f"p_{c}"]) for c in ("Cl", "Fi", "Ma")]
                                                           for r in cv]))["proba"]
        for p, row in zip(predicted, calibrated):
            assert all(abs(float(p[f"p_{c}"]) - v) < 1e-3 for c, v in zip(("Cl", "Fi", "Ma"), row)), fusion.name
