"""Config validation and the helpers that turn the config into target paths."""
import csv
import functools
import hashlib
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cntem.classify import NAMES as CLASSIFIER_NAMES
from cntem.config import config_digest, consistency_problems, schema_problems
from cntem.schemes import resolve_scheme

SCHEMA = Path(workflow.basedir) / "config" / "schema.yaml"


def _stop_on(problems):
    if problems:
        raise WorkflowError(f"invalid config ({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems))


# One line per bad key first (Snakemake's validator would print the whole schema), then the
# schema's defaults are filled in, then the checks that span keys.
_stop_on(schema_problems(config, yaml.safe_load(SCHEMA.read_text())))
validate(config, schema=str(SCHEMA), set_default=True)
_stop_on(consistency_problems(config))
CONFIG_DIGEST = config_digest(config)

SCHEMES = config["schemes"]
STRATEGIES = config["balance"]["strategies"]
FOLDS = list(range(config["cv"]["folds"]))
K_MAIN = config["k"]
K_VALUES = sorted(set(config["k_values"]) | {K_MAIN})
CLASSIFIERS = config["classifiers"]
MODEL_SCHEME = config["model"]["scheme"] or SCHEMES[0]
MAIN_STRATEGY = "rotate" if "rotate" in STRATEGIES else STRATEGIES[0]
try:
    CORES = workflow.cores
except WorkflowError:  # --report, --lint and cluster runs may parse the workflow without --cores
    CORES = 1
# Per-fold learning jobs are many and small: two run side by side by default
# (extraction takes every core). Override per rule with --set-threads RULE=N.
LEARNING_THREADS = max(1, CORES // 2)
# What each extraction computes: batch size and device change only its speed, so they are not
# rule params (a params change would re-extract every shard).
EXTRACTION = {key: config["hypercolumns"][key] for key in ("taps", "density", "image_size", "resize", "seed")}


wildcard_constraints:
    scheme="[A-Za-z0-9_]+",
    balance="|".join(STRATEGIES),
    k=r"\d+",
    fold=r"\d+",
    classifier="|".join(CLASSIFIER_NAMES),
    method=r"k\d+|baseline",
    shard=r"\d+",


def data_inputs():
    """The demo rule's outputs when the demo is on (so the DAG generates the data first), else
    the labels CSV: an edited labels file re-runs ingestion."""
    if config["demo"]["enabled"]:
        return {"demo": "results/demo/images", "labels": "results/demo/labels.csv"}
    return {"labels": config["data"]["labels_csv"]} if config["data"]["labels_csv"] else {}


def data_fingerprint():
    """Names, sizes and modification times of the files in data.dir, hashed.

    A folder is no rule input, so this params value is what re-runs ingestion (and then only
    the affected shards) when images are added, removed or replaced.
    """
    if config["demo"]["enabled"]:
        return ""
    root = Path(config["data"]["dir"])
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------- hypercolumn shards
def manifest_shards():
    """Each shard's manifest rows, once the manifest checkpoint has run."""
    path = checkpoints.hypercolumn_manifest.get().output.manifest
    return _shards_of(path, Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _shards_of(path, mtime_ns):
    # The scheduler asks for every job's inputs: read the (up to ~10,000-row) manifest once per version.
    shards = {}
    with open(path) as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            shards.setdefault(int(r["shard"]), []).append(r)
    return shards


def shard_members(wildcards):
    """Entries of one shard as a sorted string: a params value, so a changed shard reruns."""
    return ";".join(sorted(f"{r['id']}@{r['rotation']}" for r in manifest_shards()[int(wildcards.shard)]))


def shard_images(wildcards):
    return sorted({r["path"] for r in manifest_shards()[int(wildcards.shard)]})


def all_shards(wildcards=None):
    return [f"results/hypercolumns/shard-{s:03d}.h5" for s in sorted(manifest_shards())]


# ------------------------------------------------------------------------- runs
def evaluation_runs():
    """(scheme, balance, method, classifier) of every cross-validated run the figures need.

    Main runs (Fig. 8-11): every balance strategy with gradient boosting at K and the LS baseline.
    K study (ESI Fig. S1/S2): every classifier at every K, with the main balance strategy.
    """
    runs = set()
    for s in SCHEMES:
        for b in STRATEGIES:
            runs |= {(s, b, f"k{K_MAIN}", "xgboost"), (s, b, "baseline", "linear_softmax")}
        runs |= {(s, MAIN_STRATEGY, f"k{k}", c) for k in K_VALUES for c in CLASSIFIERS}
    return sorted(runs)


def run_dir(scheme, balance, method):
    return f"results/{scheme}/{balance}/{method}"


def run_descriptions(runs):
    """The tidy table's columns of each run: which representation (hcol at K, or the baseline) and classifier."""
    return [{"scheme": s, "balance": b, "classifier": c, "method": "baseline" if m == "baseline" else "hcol",
             "k": "" if m == "baseline" else m[1:]} for s, b, m, c in runs]


def metrics_files(runs):
    return [f"{run_dir(s, b, m)}/{c}/metrics.json" for s, b, m, c in runs]


# The paper's main comparison (Fig. 8, 9, 11): each balance strategy x (hypercolumns + XGBoost at K, baseline).
MAIN_PANELS = [(b, kind) for b in STRATEGIES for kind in ("hcol", "baseline")]


def main_metrics(wildcards):
    """metrics.json of each of MAIN_PANELS for one scheme, in that order."""
    method = {"hcol": (f"k{K_MAIN}", "xgboost"), "baseline": ("baseline", "linear_softmax")}
    return [f"{run_dir(wildcards.scheme, b, method[kind][0])}/{method[kind][1]}/metrics.json" for b, kind in MAIN_PANELS]


def evaluation_inputs(wildcards):
    """One run's per-fold predictions and fits, and what its leakage check reads."""
    run = run_dir(wildcards.scheme, wildcards.balance, wildcards.method)
    per_fold = lambda name: [f"{run}/fold{f}/{wildcards.classifier}/{name}" for f in FOLDS]  # noqa: E731
    return {"predictions": per_fold("predictions.tsv"), "fits": per_fold("fit.json"),
            "plan": f"results/{wildcards.scheme}/{wildcards.balance}/plan.tsv",
            "folds": f"results/{wildcards.scheme}/folds.tsv",
            "dictionaries": [] if wildcards.method == "baseline" else [f"{run}/fold{f}/dictionary.h5" for f in FOLDS]}


# ------------------------------------------------------------------------- targets
def figure_targets():
    figs = []
    for s in SCHEMES:
        base = f"results/figures/{s}"
        figs += [f"{base}/accuracy_grid.png", f"{base}/confusion_matrices.png", f"{base}/tsne.png",
                 f"{base}/k_study.png", f"{base}/fit_time.png", f"{base}/misclassified.png",
                 f"{base}/activations.png", f"results/{s}/contact_sheet.png"]
    return figs


def all_outputs():
    outputs = ["results/metrics.tsv", "results/leakage_check.txt", "results/software_versions.tsv", "results/config.yaml",
               *figure_targets(), f"results/model/{MODEL_SCHEME}/model.json"]
    if config["predict"]["input"]:
        outputs.append("results/predictions/predictions.csv")
    return outputs
