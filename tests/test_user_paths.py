"""What a new user does, as the README says it: own data, the NIOSH config, errors, recovery after kill -9."""
import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cntem.config import config_digest

from conftest import REPO, SHARED_WEIGHTS, copy_checkout, write_image

WEIGHTS = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random"
README = (REPO / "README.md").read_text()
# Sizes only, never the method's choices: keeps an end-to-end run of a README recipe within a test's budget.
SMALL_RUN = {"weights": WEIGHTS, "hypercolumns": {"image_size": 32, "batch_size": 8, "shards": 2},
             "k": 4, "k_values": [4], "dictionary": {"sample_size": 2000, "niter": 5}, "cv": {"folds": 2},
             "classifiers": ["xgboost"], "xgboost": {"n_estimators": 10}, "balance": {"strategies": ["rotate"]},
             "uncertainty": {"validation_samples": 2, "bootstrap": 50, "sample_sizes": [20]}}


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced `language` block that starts with `first_line`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README, re.S)
    return next(b for b in blocks if b.startswith(first_line))


def readme_commands(containing: str) -> list[list[str]]:
    """The commands (comments dropped, split as a shell does) of the README's first bash block with a line
    that contains `containing`."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if containing in b)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def run(command: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    if ok:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def test_own_data_recipe_then_recovery_then_report_as_the_readme_says(tmp_path):
    """The README's own-data recipe, its commands after a crash and its report command, verbatim and in that order,
    on one results folder; a command without the recipe's --configfile is refused instead of loading the demo."""
    checkout = copy_checkout(tmp_path / "checkout")
    data, new = tmp_path / "micrographs", tmp_path / "new_micrographs"
    for c, cls in enumerate(["Cl", "Fi", "Ma"]):
        for i in range(6):
            write_image(data / cls / f"{cls.lower()}{i}.tif", seed=10 * c + i, size=(48, 40))
    # the labels CSV kept inside the data folder, tying two micrographs into one group
    (data / "labels.csv").write_text("path,label,group\nCl/cl0.tif,Cl,pair\nCl/cl1.tif,Cl,pair\n")
    for i in range(3):
        write_image(new / f"new{i}.png", seed=500 + i, size=(48, 40))
    recipe = readme_block("yaml", "# my_experiment.yaml")
    recipe = recipe.replace("/path/to/new_micrographs", str(new)).replace("/path/to/micrographs", str(data))
    # sizes only (SMALL_RUN), in the user's own file: every README command below then runs exactly as written
    (checkout / "my_experiment.yaml").write_text(recipe + yaml.safe_dump(SMALL_RUN))
    recipe_run, report = readme_commands("snakemake --cores all --configfile my_experiment.yaml")
    assert recipe_run == shlex.split("snakemake --cores all --configfile my_experiment.yaml")
    out = run(recipe_run, checkout)
    log = out.stdout + out.stderr
    assert "rule demo_dataset" not in log and not (checkout / "results" / "demo").exists()
    results = checkout / "results"
    effective = yaml.safe_load((results / "config.yaml").read_text())
    assert effective["data"]["dir"] == str(data) and effective["demo"]["enabled"] is False
    assert effective["vlad"]["pca_dim"] is None  # the paper's method, not the demo's compression
    classified = {Path(r["file"]).name for r in csv.DictReader(open(results / "predictions" / "predictions.csv"))}
    assert classified == {"new0.png", "new1.png", "new2.png"}
    images = list(csv.DictReader(open(results / "images.tsv"), delimiter="\t"))
    assert len(images) == 18 and {r["group"] for r in images if r["id"] in ("Cl/cl0.tif", "Cl/cl1.tif")} == {"pair"}
    assert "ignored 1 file(s)" in (results / "logs" / "ingest.log").read_text()
    metrics = list(csv.DictReader(open(results / "metrics.tsv"), delimiter="\t"))
    assert {r["class"] for r in metrics if r["metric"] == "class_accuracy"} == {"Cl", "Fi", "Ma"}
    assert {r["config"] for r in metrics} == {config_digest(effective)}  # every row traced to config.yaml

    # A crash: a figure job cut off, and the killed run's lock left behind.
    (results / "figures" / "cnt3" / "tsne.png").unlink()
    (checkout / ".snakemake" / "locks").mkdir(parents=True, exist_ok=True)
    (checkout / ".snakemake" / "locks" / "0.output.lock").write_text("results/figures/cnt3/tsne.png\n")
    kept = {p: p.stat().st_mtime_ns for p in [results / "images.tsv", *results.glob("hypercolumns/*/shard-*.h5")]}
    unlock, rerun = readme_commands("snakemake --unlock")
    locked = run(rerun, checkout, ok=False)
    assert "Directory cannot be locked" in locked.stdout + locked.stderr
    # The commands as they were before results/experiment.json: the demo's config would write over this experiment.
    bare_rerun = ["snakemake", "--cores", "all", "--rerun-incomplete"]
    for bare in (["snakemake", "--unlock"], bare_rerun, ["snakemake", "--report", "results/report.html"]):
        refused = run(bare, checkout, ok=False)
        message = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "results/ holds another experiment than this run's" in message
        assert f"results/ (results/experiment.json): data {data} (layout folders, labels {data}/labels.csv), " \
               "config file(s) my_experiment.yaml" in message
        assert "this run: the demo's data results/demo/images (layout niosh" in message
        assert "add --configfile my_experiment.yaml to the command" in message and "Traceback" not in message
    assert not (results / "demo").exists() and (checkout / ".snakemake" / "locks" / "0.output.lock").exists()
    advice = re.search(r"add (--configfile \S+) to the command", message)[1]  # the fix, as advised, runs (dry)
    advised = run(bare_rerun + ["-n", *shlex.split(advice)], checkout)
    assert job_names(advised.stdout + advised.stderr) == {"figure_tsne", "all"}
    run(unlock, checkout)
    redone = run(rerun, checkout)
    assert job_names(redone.stdout + redone.stderr) == {"figure_tsne", "all"}
    assert (results / "figures" / "cnt3" / "tsne.png").exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished outputs kept, nothing of the demo
    run(report, checkout)
    html = (results / "report.html").read_text(errors="ignore")
    assert "cnt3" in html and "accuracy_grid.png" in html and "metrics.tsv" in html
    # the experiment's dry run and lint load it as well
    dry = run(recipe_run + ["-n"], checkout)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    run(["snakemake", "--lint", "--configfile", "my_experiment.yaml"], checkout)


def job_names(log: str) -> set[str]:
    """The rules of the jobs a Snakemake run started."""
    return set(re.findall(r"^(?:local)?rule (\w+):$", log, re.M))


def test_niosh_recipe_as_the_readme_says(tmp_path):
    """The README's NIOSH command on a NIOSH-named folder at data/niosh: the whole DAG (dry run), the data stages."""
    from cntem.synthetic import generate_dataset

    checkout = copy_checkout(tmp_path / "checkout")
    counts = {c: 6 for c in ("Cl", "Fi", "Ma", "MS", "GS", "SP", "HDP", "PR")}
    generate_dataset(checkout / "data" / "niosh", counts, labels_csv=checkout / "data" / "niosh_labels.csv",
                     seed=1, size_range=(64, 64))
    command = shlex.split(re.search(r"run `(snakemake --cores all --configfile config/niosh\.yaml)`", README)[1])
    dry = run(command + ["-n"], checkout).stdout
    assert "rule demo_dataset" not in dry and "hypercolumn_manifest" in dry
    targets = ["results/8class/rotate/plan.tsv", "results/4class/none/plan.tsv"]
    run(command[:1] + targets + command[1:], checkout)  # targets before --configfile, which takes a list
    plan = list(csv.DictReader(open(checkout / "results" / "8class" / "rotate" / "plan.tsv"), delimiter="\t"))
    train = [r for r in plan if r["fold"] == "0" and r["role"] == "train"]
    # 600 per class asked; 4 or 5 training images per class reach at most 4x that with rotations
    assert {r["class"] for r in train} == set(counts)
    assert all(sum(r["class"] == c for r in train) == 4 * sum(r["class"] == c and r["rotation"] == "0"
                                                             for r in train) for c in counts)


def test_bad_input_is_one_clean_message_also_in_the_log(tmp_path):
    data = tmp_path / "data"
    for c, cls in enumerate(("Cl", "Fi")):
        for i in range(3):
            write_image(data / cls / f"{i}.tif", seed=10 * c + i, size=(40, 40))
    (data / "stray.tif").write_bytes(b"not a picture")
    (data / "Fi" / "3.tif").write_bytes((data / "Fi" / "0.tif").read_bytes()[:200])  # cut short
    # a class of the scheme no image has, beside an unlabelled and an unreadable file: all in one message
    config = {"data": {"dir": str(data)}, "schemes": ["two"],
              "custom_schemes": {"two": {"Cl": "Cl", "Fi": "Fi", "Ma": "Ma"}}, "cv": {"folds": 2}, "weights": "random"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
                "--configfile", "c.yaml"], tmp_path, ok=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output
    message = "stray.tif: no label; put it in a class sub-folder or give it a row in the labels CSV"
    assert output.count(message) == 1
    logged = (tmp_path / "results" / "logs" / "ingest.log").read_text()
    assert message in logged and "the input data has problems (3)" in logged
    assert "Fi/3.tif: unreadable or truncated" in logged and "class 'Ma' of two has no image" in logged
    assert " ERROR: " not in logged.replace(" cntem ERROR: ", "")  # tifffile's own lines about the damaged file
    assert not (tmp_path / "results" / "hypercolumns").exists()  # stopped before anything expensive


def test_a_killed_run_resumes_without_recomputing_finished_shards(tmp_path):
    data = tmp_path / "data"
    for c, cls in enumerate(["Cl", "Fi"]):
        for i in range(12):
            write_image(data / cls / f"{cls}{i:02d}.tif", seed=100 * c + i, size=(40, 40))
    config = {"data": {"dir": str(data)}, "schemes": ["two"], "custom_schemes": {"two": {"Cl": "Cl", "Fi": "Fi"}},
              "cv": {"folds": 2}, "balance": {"strategies": ["none"]}, "weights": "random",
              "hypercolumns": {"image_size": 32, "batch_size": 8, "shards": 5}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "c.yaml"]
    shards = tmp_path / "results" / "hypercolumns" / "squash"
    first = subprocess.Popen(snakemake + ["--cores", "1"], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list(shards.glob("shard-*.h5"))) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.h5")}
    assert 2 <= len(finished) < 5, "the run was not killed in the middle of extraction"
    locked = run(snakemake + ["--cores", "1"], tmp_path, ok=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    run(snakemake + ["--unlock"], tmp_path)  # the README's recovery, verbatim
    # the README's second recovery command, stopping after the stage checked here
    log = run(snakemake + ["--cores", "all", "--rerun-incomplete", "hypercolumns"], tmp_path).stderr
    extracted = set(re.findall(r"rule extract_hypercolumns:\n(?:.*\n)*?\s+wildcards: input_mode=squash, shard=(\d+)", log))
    assert extracted and not extracted & {name[6:9] for name in finished}
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.h5")}
    expected = {f"shard-{int(r['shard']):03d}.h5" for r in csv.DictReader(open(shards / "manifest.tsv"), delimiter="\t")}
    assert set(after) == expected and all(after[name] == mtime for name, mtime in finished.items())
