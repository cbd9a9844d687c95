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
from cntem.schemes import class_tree, resolve_scheme, scheme_classes

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
# Beyond the paper: the pooled hypercolumn cross-validated with every classifier (method "pooled").
POOLED = config["representations"]["pooled"]
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
    method=r"k\d+|baseline|pooled",
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
    """(scheme, balance, method, classifier) of every cross-validated run the figures and the table need.

    Main runs (Fig. 8-11): every balance strategy with gradient boosting at K and the LS baseline.
    K study (ESI Fig. S1/S2): every classifier at every K, with the main balance strategy.
    With representations.pooled: every classifier on the pooled hypercolumns, with the main balance strategy.
    Every classifier but hierarchical on a scheme whose classes form no tree (scheme_classifiers).
    """
    runs = set()
    for s in SCHEMES:
        for b in STRATEGIES:
            runs |= {(s, b, f"k{K_MAIN}", "xgboost"), (s, b, "baseline", "linear_softmax")}
        runs |= {(s, MAIN_STRATEGY, f"k{k}", c) for k, c in k_study_runs(s)}
        if POOLED:
            runs |= {(s, MAIN_STRATEGY, "pooled", c) for c in scheme_classifiers(s)}
    return sorted(runs)


def scheme_classifiers(scheme):
    """The classifiers of `classifiers` a scheme is cross-validated with: hierarchical only where its classes form a
    tree (on 4class it would be its base classifier again)."""
    has_tree = class_tree(scheme_classes(resolve_scheme(scheme, config["custom_schemes"]))) is not None
    return [c for c in CLASSIFIERS if c != "hierarchical" or has_tree]


def k_study_runs(scheme):
    """(K, classifier) of a scheme's K study, with the main balance strategy."""
    return [(k, c) for k in K_VALUES for c in scheme_classifiers(scheme)]


def run_dir(scheme, balance, method):
    return f"results/{scheme}/{balance}/{method}"


def is_vlad(method):
    """Whether a run's method is VLAD of hypercolumns at some K ("k<K>"), which has a dictionary per fold."""
    return method.startswith("k")


# The tidy table's name of each method other than VLAD ("hcol", with its K in the k column).
TIDY_METHODS = {"baseline": "baseline", "pooled": "pooled_hcol"}


def run_descriptions(runs):
    """The tidy table's columns of each run: which representation (hcol: VLAD at K; pooled_hcol; the baseline)
    and classifier."""
    return [{"scheme": s, "balance": b, "classifier": c, "method": "hcol" if is_vlad(m) else TIDY_METHODS[m],
             "k": m[1:] if is_vlad(m) else ""} for s, b, m, c in runs]


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
            "dictionaries": [f"{run}/fold{f}/dictionary.h5" for f in FOLDS] if is_vlad(wildcards.method) else []}


def encoded_fold(wildcards):
    """The file of one fold's entries in the run's representation: VLAD at K or the pooled hypercolumns."""
    fold = f"{run_dir(wildcards.scheme, wildcards.balance, wildcards.method)}/fold{wildcards.fold}"
    return f"{fold}/vlad.h5" if is_vlad(wildcards.method) else f"{fold}/pooled_hypercolumns.h5"


def model_representation():
    """What the final model's representation is made of (train_model's params: a change retrains it). A
    model of pooled hypercolumns has no dictionary, so editing K or the VLAD settings leaves it as it is."""
    if config["model"]["representation"] == "pooled":
        return {"representation": "pooled"}
    return {"representation": "vlad", "k": K_MAIN, "dictionary": config["dictionary"], "vlad": config["vlad"]}


# ------------------------------------------------------------------------- targets
def figure_targets():
    figs = []
    for s in SCHEMES:
        base = f"results/figures/{s}"
        figs += [f"{base}/accuracy_grid.png", f"{base}/confusion_matrices.png", f"{base}/tsne.png",
                 f"{base}/k_study.png", f"{base}/fit_time.png", f"{base}/misclassified.png",
                 f"{base}/activations.png", f"{base}/comparison.png", f"results/{s}/contact_sheet.png"]
    return figs


def all_outputs():
    outputs = ["results/metrics.tsv", "results/comparison.tsv", "results/leakage_check.txt", "results/software_versions.tsv", "results/config.yaml",
               *figure_targets(), f"results/model/{MODEL_SCHEME}/model.json"]
    if config["predict"]["input"]:
        outputs.append("results/predictions/predictions.csv")
    return outputs
