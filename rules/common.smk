"""Config loading and validation, the method space (cntem.method_space) and the input functions that turn its runs
into paths. What runs, and what each run is called, is decided in the package; here it only meets Snakemake."""
import csv
import functools
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cntem.config import config_digest, consistency_problems, schema_problems
from cntem.experiment import OtherExperimentError, check_experiment, experiment_of, record_experiment
from cntem.io import folder_fingerprint
from cntem.method_space import MethodSpace
from cntem.runs import (CLASSIFIERS, FUSED, LATE_ESTIMATOR_PATTERN, METHOD_PATTERN, REPRESENTATION_PATTERN,
                        Method, Run, Representation, kind_pattern, predictions_file)
from cntem.selection import candidate_representations
from cntem.tta import group_setting
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
SPACE = MethodSpace(config)
_stop_on(SPACE.problems())
CONFIG_DIGEST = config_digest(config)
# The experiment results/ holds (cntem.experiment): another one's run is refused now, before it writes anything.
EXPERIMENT = experiment_of(config, workflow.configfiles)
try:
    check_experiment(EXPERIMENT)
except OtherExperimentError as exc:
    raise WorkflowError(str(exc)) from None


onstart:
    record_experiment(EXPERIMENT)


SCHEMES = SPACE.schemes
STRATEGIES = SPACE.strategies
MAIN_STRATEGY = SPACE.main_balance
FOLDS = list(range(config["cv"]["folds"]))
# Repeated CV: cv.repeats fold assignments, each a full K-fold. A run's per-split targets are fold<split>, split =
# repeat x folds + fold (cntem.folds.split_index): with one repeat (the paper) SPLITS are FOLDS, paths unchanged.
# The figures that show one pass over the images (t-SNE, misclassified) use repeat 0's FOLDS.
REPEATS = config["cv"]["repeats"]
SPLITS = list(range(REPEATS * len(FOLDS)))
MODEL_SCHEME = SPACE.model_scheme
# Balance strategies whose runs are also evaluated with test-time averaging over AVERAGING_GROUP (rot4 or d8): their
# plans, fold files and fold jobs hold each validation image's rotated (and with d8 mirrored) copies.
TTA_BALANCES = SPACE.averaged_balances
AVERAGING_GROUP = SPACE.averaging_group
INPUT_MODES = SPACE.input_modes
try:
    CORES = workflow.cores
except WorkflowError:  # --report, --lint and cluster runs may parse the workflow without --cores
    CORES = 1
# Per-fold learning jobs are many and small: two run side by side by default
# (extraction takes every core). Override per rule with --set-threads RULE=N.
LEARNING_THREADS = max(1, CORES // 2)
# What each extraction computes: batch size and device change only its speed, so they are not
# rule params (a params change would re-extract every shard).
EXTRACTION = {key: config["hypercolumns"][key] for key in ("taps", "density", "image_size", "input_mode",
                                                        "max_side", "seed")}


def extraction(mode):
    """What an extraction in input mode `mode` computes (a rule's params: a change re-extracts)."""
    return {**EXTRACTION, "input_mode": mode}


wildcard_constraints:
    scheme="[A-Za-z0-9_]+",
    balance="|".join(STRATEGIES),
    fold=r"\d+",
    classifier="|".join(CLASSIFIERS),
    representation=REPRESENTATION_PATTERN,
    method=METHOD_PATTERN,
    shard=r"\d+",
    input_mode="|".join(INPUT_MODES),


def data_inputs():
    """The demo rule's outputs when the demo is on (so the DAG generates the data first), else
    the labels CSV: an edited labels file re-runs ingestion."""
    if config["demo"]["enabled"]:
        return {"demo": "results/demo/images", "labels": "results/demo/labels.csv"}
    return {"labels": config["data"]["labels_csv"]} if config["data"]["labels_csv"] else {}


def data_fingerprint():
    """What re-runs ingestion (and then extraction of the new entries only) when images are added, removed or
    replaced: a folder is no rule input. The demo's folder is a rule output instead."""
    return "" if config["demo"]["enabled"] else folder_fingerprint(config["data"]["dir"])


# ------------------------------------------------------------------- hypercolumn shards
def manifest_shards(mode):
    """The shard numbers of input mode `mode` (those holding entries its manifest uses), once its manifest
    checkpoint has run."""
    path = checkpoints.hypercolumn_manifest.get(input_mode=mode).output.manifest
    return _shards_of(path, Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _shards_of(path, mtime_ns):
    # The scheduler asks for every job's inputs: read the (up to ~10,000-row) manifest once per version.
    with open(path) as fh:
        return sorted({int(r["shard"]) for r in csv.DictReader(fh, delimiter="\t")})


def mode_shards(mode):
    """Every shard of input mode `mode` that holds entries the manifest uses, in shard order."""
    return [f"results/hypercolumns/{mode}/shard-{s:03d}.h5" for s in manifest_shards(mode)]


def representation_shards(wildcards):
    """The shards a representation is read from: those of its input mode."""
    return mode_shards(Representation.parse(wildcards.representation).input_mode)


def vlad_k(wildcards):
    """K of a VLAD representation ("squash-k50")."""
    return Representation.parse(wildcards.representation).k


# ------------------------------------------------------------------------- runs as paths
def fold_dir(scheme, balance, representation, fold):
    """One split's files of a representation (dictionary, encoded entries) and, below, of its classifiers."""
    return f"results/{scheme}/{balance}/{representation.name}/fold{fold}"


def metrics_files(runs):
    """Each run's metrics.json: the run's name is its evaluation folder."""
    return [f"results/{run.name}/metrics.json" for run in runs]


def main_metrics(wildcards):
    """metrics.json of each of the paper's main panels for one scheme, in MethodSpace.main_panels' order."""
    return metrics_files(SPACE.main_panels(wildcards.scheme))


def main_strategy_metrics(wildcards):
    """metrics.json of the main panels at the main balance strategy (the confusion matrices' runs)."""
    return metrics_files([r for r in SPACE.main_panels(wildcards.scheme) if r.balance == MAIN_STRATEGY])


def averaging_at(balance: str) -> str:
    """The averaging group a balance strategy's plans, fold files and fold jobs hold copies for; "" for none."""
    return AVERAGING_GROUP if balance in TTA_BALANCES else ""


def method_dir(scheme, balance, method, fold):
    """One split's fold job of a method: its classifier's (or late fusion's) folder below its representation's."""
    return f"{fold_dir(scheme, balance, method.representation, fold)}/{method.estimator}"


def evaluation_inputs(wildcards):
    """One run's per-split predictions and fits, and what its leakage check reads (the dictionaries of every VLAD
    representation in it, split by split). An averaged run reads its plain method's fold jobs: their averaged
    predictions, and the same fits."""
    method = Method.parse(wildcards.method)
    scheme, balance = wildcards.scheme, wildcards.balance
    folds = [method_dir(scheme, balance, method, f) for f in SPLITS]
    return {"predictions": [f"{d}/{method.predictions_file}" for d in folds],
            "fits": [f"{d}/fit.json" for d in folds],
            "plan": f"results/{scheme}/{balance}/plan.tsv",
            "folds": f"results/{scheme}/folds.tsv",
            "dictionaries": [f"{fold_dir(scheme, balance, part, f)}/dictionary.h5" for f in SPLITS
                             for part in method.representation.singles if part.has_dictionary]}


def encoded_file(scheme, balance, representation, fold):
    """One split's entries encoded in a single (VLAD or pooled) representation."""
    return f"{fold_dir(scheme, balance, representation, fold)}/{representation.encoded_file}"


def encoded_files(scheme, balance, representation, fold):
    """One split's entries in a representation: its file, or for an early fusion each of its parts' files."""
    return [encoded_file(scheme, balance, part, fold) for part in representation.singles]


def encoded_fold(wildcards):
    return encoded_files(wildcards.scheme, wildcards.balance, Representation.parse(wildcards.representation),
                         wildcards.fold)


def late_fusion_inputs(wildcards):
    """One split of a late fusion: its members' predictions and fits; for stacking, their encoded files (of which
    the job reads the training rows only)."""
    method = Method.of_fold_job(wildcards.representation, wildcards.estimator)
    scheme, balance, fold = wildcards.scheme, wildcards.balance, wildcards.fold
    dirs = [method_dir(scheme, balance, m, fold) for m in method.members]
    return {"predictions": [f"{d}/{predictions_file()}" for d in dirs], "fits": [f"{d}/fit.json" for d in dirs],
            "encoded": [encoded_file(scheme, balance, m.representation, fold) for m in method.members]
            if method.combiner == "stack" else [],
            "folds": f"results/{scheme}/folds.tsv"}


def late_fusion_averaged_inputs(wildcards):
    """One split of a late fusion's members' averaged predictions."""
    method = Method.of_fold_job(wildcards.representation, wildcards.estimator)
    return [f"{method_dir(wildcards.scheme, wildcards.balance, m, wildcards.fold)}/"
            f"{predictions_file(AVERAGING_GROUP)}" for m in method.members]


def late_fusion_settings(wildcards):
    """The settings of a late fusion's member classifiers (stacking refits them on inner folds)."""
    method = Method.of_fold_job(wildcards.representation, wildcards.estimator)
    return {m.classifier: config[m.classifier] for m in method.members}


# ------------------------------------------------------------------------- the deployed model
def representation_settings(representation):
    """What a model's representation is made of beyond its name (train_model's params: a change retrains it). A
    pooled model has no dictionary, so editing K or the VLAD settings leaves it as it is."""
    if representation.kind == "vlad":
        return {"dictionary": config["dictionary"], "vlad": config["vlad"]}
    return {}


def method_settings(method):
    """A model's settings; a fused one's by single representation and by classifier, and the stacking's."""
    if not method.is_fused:
        return {"representation_settings": representation_settings(method.representation),
                "classifier_settings": config[method.classifier]}
    return {"representation_settings": {r.name: representation_settings(r) for r in method.representation.singles},
            "classifier_settings": {c: config[c] for c in method.classifiers},
            "stack": config["fusion"]["stack"] if method.combiner == "stack" else {}}


def model_shards(wildcards):
    """train_model's shards, named shards_<mode> for each input mode the model may use."""
    modes = {mode for m in SPACE.model_candidates() for mode in m.representation.input_modes}
    return {f"shards_{mode}": mode_shards(mode) for mode in sorted(modes)}


def model_params():
    """train_model's params: the configured method, or with model.method auto every candidate of the model scheme's
    selection, which the job picks from results/nested.json (the plain-CV winner)."""
    if SPACE.auto_model:
        return {"method": "auto", "candidates": {m.name: method_settings(m) for m in SPACE.model_candidates()}}
    (method,) = SPACE.model_candidates()
    return {"method": method.name, **method_settings(method)}


# ------------------------------------------------------------------------- selection
def selection_encoded(scheme, fold):
    """Each representation the inner selection of one outer split reads (its candidates' and their members'), by
    name: its encoded file(s) of the split, of which the job reads the training rows only."""
    names = candidate_representations([m.name for m in SPACE.candidates(scheme)])
    return {name: encoded_files(scheme, MAIN_STRATEGY, Representation.parse(name), fold) for name in names}


def selection_inputs(wildcards):
    """One outer split's candidates: their encoded training rows (each file once), and their outer predictions and
    fits of the split (to score the one chosen)."""
    scheme, fold = wildcards.scheme, wildcards.fold
    dirs = [method_dir(scheme, MAIN_STRATEGY, m, fold) for m in SPACE.candidates(scheme)]
    files = [f for paths in selection_encoded(scheme, fold).values() for f in paths]
    return {"encoded": list(dict.fromkeys(files)),
            "predictions": [f"{d}/{predictions_file()}" for d in dirs], "fits": [f"{d}/fit.json" for d in dirs],
            "plan": f"results/{scheme}/{MAIN_STRATEGY}/plan.tsv",
            "folds": f"results/{scheme}/folds.tsv"}


def selection_candidates(wildcards):
    return [m.name for m in SPACE.candidates(wildcards.scheme)]


def selection_classifiers(scheme):
    """The classifiers of a scheme's candidates and of their members, each once."""
    return list(dict.fromkeys(member.classifier for m in SPACE.candidates(scheme) for member in m.members))


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
    outputs = ["results/metrics.tsv", "results/comparison.tsv", "results/leakage_check.txt",
               "results/software_versions.tsv", "results/config.yaml", *figure_targets(),
               f"results/model/{MODEL_SCHEME}/model.json"]
    if SPACE.nested_schemes():
        outputs.append("results/nested.tsv")
    if config["predict"]["input"]:
        outputs.append("results/predictions/predictions.csv")
    return outputs
