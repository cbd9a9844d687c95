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
from cntem.evaluate import ROTATION_AVERAGED
from cntem.schemes import class_tree, resolve_scheme, scheme_classes
from cntem.selection import candidate_methods, parse_candidate

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
# Repeated CV: cv.repeats fold assignments, each a full K-fold. A run's per-split targets are fold<split>, split =
# repeat x folds + fold (cntem.folds.split_index): with one repeat (the paper) SPLITS are FOLDS, paths unchanged.
# The figures that show one pass over the images (t-SNE, misclassified) use repeat 0's FOLDS.
REPEATS = config["cv"]["repeats"]
SPLITS = list(range(REPEATS * len(FOLDS)))
K_MAIN = config["k"]
K_VALUES = sorted(set(config["k_values"]) | {K_MAIN})
CLASSIFIERS = config["classifiers"]
MODEL_SCHEME = config["model"]["scheme"] or SCHEMES[0]
MAIN_STRATEGY = "rotate" if "rotate" in STRATEGIES else STRATEGIES[0]
# Beyond the paper: the pooled hypercolumn cross-validated with every classifier (method "pooled").
POOLED = config["representations"]["pooled"]
# Beyond the paper: test-time rotation averaging (evaluation.rotation_averaging: true for every balance strategy, or
# a list of them) of the runs rotation_averaged_runs names. Their fold files (VLAD at K, pooled hypercolumns) and the
# baseline also hold each validation image's rotated copies, which XGBoost (and the baseline) predict.
TTA_BALANCES = (STRATEGIES if config["evaluation"]["rotation_averaging"] is True
                else list(config["evaluation"]["rotation_averaging"] or []))
TTA_ENCODED = (f"k{K_MAIN}", "pooled")
TTA = "_tta"  # the method wildcard's suffix of a rotation-averaged run: its folds' predictions_tta.tsv
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
# Input modes (what the network sees of a micrograph): the main one (hypercolumns.input_mode: every run above) and,
# beyond the paper, representations.input_modes, each with its own shard store and runs named "<mode>-<method>".
MAIN_MODE = config["hypercolumns"]["input_mode"]
OTHER_MODES = [m for m in config["representations"]["input_modes"] if m != MAIN_MODE]
INPUT_MODES = [MAIN_MODE, *OTHER_MODES]


# Run methods by representation, in the main input mode or (prefixed) another one.
MODE_PREFIX = "(" + "|".join(f"{m}-" for m in OTHER_MODES) + ")?" if OTHER_MODES else ""
VLAD_METHOD, POOLED_METHOD, BASELINE_METHOD = (MODE_PREFIX + m for m in (r"k\d+", "pooled", "baseline"))


def extraction(mode):
    """What an extraction in input mode `mode` computes (a rule's params: a change re-extracts)."""
    return {**EXTRACTION, "input_mode": mode}


wildcard_constraints:
    scheme="[A-Za-z0-9_]+",
    balance="|".join(STRATEGIES),
    k=r"\d+",
    fold=r"\d+",
    classifier="|".join(CLASSIFIER_NAMES),
    method=MODE_PREFIX + r"(k\d+|baseline|pooled)(_tta)?",
    shard=r"\d+",
    input_mode="|".join(INPUT_MODES),


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


def method_shards(wildcards):
    """The shards a run method reads: those of its input mode."""
    return mode_shards(method_mode(wildcards.method))


def method_mode(method):
    """The input mode of a run method: the main one, or that of its "<mode>-" prefix."""
    return method.rpartition("-")[0] or MAIN_MODE


def base_method(method):
    """A run method without its input mode's prefix: "tiles-k50" -> "k50"."""
    return method.rpartition("-")[2]


def mode_method(mode, method):
    """The run method `method` (k<K>, pooled, baseline) in input mode `mode`."""
    return method if mode == MAIN_MODE else f"{mode}-{method}"


def vlad_k(wildcards):
    """K of a VLAD run method ("k50", "tiles-k50")."""
    return int(base_method(wildcards.method)[1:])


# ------------------------------------------------------------------------- runs
def evaluation_runs():
    """(scheme, balance, method, classifier) of every cross-validated run the figures and the table need.

    Main runs (Fig. 8-11): every balance strategy with gradient boosting at K and the LS baseline.
    K study (ESI Fig. S1/S2): every classifier at every K, with the main balance strategy.
    With representations.pooled: every classifier on the pooled hypercolumns, with the main balance strategy.
    Every classifier but hierarchical on a scheme whose classes form no tree (scheme_classifiers).
    With evaluation.rotation_averaging: rotation_averaged_runs.
    In each of OTHER_MODES, with the main balance strategy: every classifier on VLAD at K and (representations.pooled)
    on the pooled hypercolumns, and the baseline.
    """
    runs = set()
    for s in SCHEMES:
        for b in STRATEGIES:
            runs |= {(s, b, f"k{K_MAIN}", "xgboost"), (s, b, "baseline", "linear_softmax")}
        runs |= {(s, MAIN_STRATEGY, f"k{k}", c) for k, c in k_study_runs(s)}
        if POOLED:
            runs |= {(s, MAIN_STRATEGY, "pooled", c) for c in scheme_classifiers(s)}
        runs |= set(rotation_averaged_runs(s))
        for mode in OTHER_MODES:
            runs |= {(s, MAIN_STRATEGY, mode_method(mode, m), c) for m, c in other_mode_runs(s)}
    return sorted(runs)


def other_mode_runs(scheme):
    """(method, classifier) of a scheme's runs in each input mode of OTHER_MODES."""
    methods = [f"k{K_MAIN}", *(["pooled"] if POOLED else [])]
    return [(m, c) for m in methods for c in scheme_classifiers(scheme)] + [("baseline", "linear_softmax")]


def rotation_averaged_runs(scheme):
    """The runs evaluated a second time with each validation image's probabilities averaged over its four rotations,
    from the same fold jobs (method <method>_tta; no refit): at each balance strategy of TTA_BALANCES, XGBoost at K
    and the baseline (the paper's main comparison), and XGBoost on the pooled hypercolumns where those are
    cross-validated. Only their fold jobs predict rotated copies (rules train_classifier_tta, train_baseline_tta)."""
    runs = []
    for b in TTA_BALANCES:
        runs += [(scheme, b, f"k{K_MAIN}{TTA}", "xgboost"), (scheme, b, f"baseline{TTA}", "linear_softmax")]
        if POOLED and b == MAIN_STRATEGY and "xgboost" in scheme_classifiers(scheme):
            runs.append((scheme, b, f"pooled{TTA}", "xgboost"))
    return runs


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
    """Whether a run's method is VLAD of hypercolumns at some K ("k<K>", "<mode>-k<K>"), which has a dictionary per
    fold."""
    return base_method(method).startswith("k")


# The tidy table's name of each method other than VLAD ("hcol", with its K in the k column).
TIDY_METHODS = {"baseline": "baseline", "pooled": "pooled_hcol"}


def run_descriptions(runs):
    """The tidy table's columns of each run: which representation (hcol: VLAD at K; pooled_hcol; the baseline),
    with ROTATION_AVERAGED (+tta) when rotation-averaged, and classifier."""
    descriptions = []
    for s, b, m, c in runs:
        name = base_method(m)
        base = name.removesuffix(TTA)
        method = ("hcol" if is_vlad(base) else TIDY_METHODS[base]) + (ROTATION_AVERAGED if name != base else "")
        descriptions.append({"scheme": s, "balance": b, "input_mode": method_mode(m), "classifier": c,
                             "method": method, "k": base[1:] if is_vlad(base) else ""})
    return descriptions


def metrics_files(runs):
    return [f"{run_dir(s, b, m)}/{c}/metrics.json" for s, b, m, c in runs]


# The paper's main comparison (Fig. 8, 9, 11): each balance strategy x (hypercolumns + XGBoost at K, baseline).
MAIN_PANELS = [(b, kind) for b in STRATEGIES for kind in ("hcol", "baseline")]


def main_metrics(wildcards):
    """metrics.json of each of MAIN_PANELS for one scheme, in that order."""
    method = {"hcol": (f"k{K_MAIN}", "xgboost"), "baseline": ("baseline", "linear_softmax")}
    return [f"{run_dir(wildcards.scheme, b, method[kind][0])}/{method[kind][1]}/metrics.json" for b, kind in MAIN_PANELS]


def evaluation_inputs(wildcards):
    """One run's per-fold predictions and fits, and what its leakage check reads. A rotation-averaged run (<method>_tta)
    reads its method's fold jobs: their averaged predictions, and the same fits."""
    method = wildcards.method.removesuffix(TTA)
    run = run_dir(wildcards.scheme, wildcards.balance, method)
    per_fold = lambda name: [f"{run}/fold{f}/{wildcards.classifier}/{name}" for f in SPLITS]  # noqa: E731
    predictions = "predictions.tsv" if method == wildcards.method else "predictions_tta.tsv"
    return {"predictions": per_fold(predictions), "fits": per_fold("fit.json"),
            "plan": f"results/{wildcards.scheme}/{wildcards.balance}/plan.tsv",
            "folds": f"results/{wildcards.scheme}/folds.tsv",
            "dictionaries": [f"{run}/fold{f}/dictionary.h5" for f in SPLITS] if is_vlad(method) else []}


def encoded_fold(wildcards):
    """The file of one fold's entries in the run's representation: VLAD at K or the pooled hypercolumns."""
    return encoded_file(wildcards.scheme, wildcards.balance, wildcards.method, wildcards.fold)


def encoded_file(scheme, balance, method, fold):
    fold = f"{run_dir(scheme, balance, method)}/fold{fold}"
    return f"{fold}/vlad.h5" if is_vlad(method) else f"{fold}/pooled_hypercolumns.h5"


def representation_settings(method):
    """What a model's representation of a run method (k<K>: VLAD at K; pooled; either with a "<mode>-" prefix) is
    made of (train_model's params: a change retrains it). A model of pooled hypercolumns has no dictionary, so
    editing K or the VLAD settings leaves it as it is."""
    mode, base = method_mode(method), base_method(method)
    if base == "pooled":
        return {"representation": "pooled", "input_mode": mode}
    return {"representation": "vlad", "input_mode": mode, "k": int(base[1:]), "dictionary": config["dictionary"],
            "vlad": config["vlad"]}


def model_shards(wildcards):
    """train_model's shards, named shards_<mode> for each input mode the model may use: the main one, and with
    model.method auto those of the candidates."""
    modes = {MAIN_MODE}
    if config["model"]["method"] == "auto":
        modes |= {method_mode(m) for m in candidate_methods(selection_candidates(MODEL_SCHEME))}
    return {f"shards_{mode}": mode_shards(mode) for mode in sorted(modes)}


def model_params():
    """train_model's params. model.method explicit: model.representation (VLAD at K, or pooled) with
    model.classifier. auto: every candidate of the model scheme's selection, which the job picks from
    results/nested.json (the plain-CV winner)."""
    model = config["model"]
    if model["method"] == "explicit":
        method = "pooled" if model["representation"] == "pooled" else f"k{K_MAIN}"
        return {"representation": representation_settings(method), "classifier": model["classifier"],
                "classifier_settings": config[model["classifier"]]}
    candidates = {}
    for name in selection_candidates(MODEL_SCHEME):
        method, classifier = parse_candidate(name)
        candidates[name] = {"representation": representation_settings(method), "classifier": classifier,
                            "classifier_settings": config[classifier]}
    return {"method": "auto", "candidates": candidates}


# ------------------------------------------------------------------------- selection
def nested_schemes():
    """Schemes whose selection runs: every scheme with selection.nested, and the model's with model.method auto."""
    if config["selection"]["nested"]:
        return SCHEMES
    return [MODEL_SCHEME] if config["model"]["method"] == "auto" else []


def all_candidates(scheme):
    """Every deployable method cross-validated on a scheme at the main balance strategy, as "<method>/<classifier>":
    the paper's (VLAD at k with XGBoost) first, then the K study's in its order, then the pooled hypercolumns'
    (representations.pooled), then those of the other input modes (representations.input_modes). The baseline is no
    candidate: a model cannot deploy it."""
    names = [f"k{k}/{c}" for k, c in k_study_runs(scheme)]
    names += [f"pooled/{c}" for c in scheme_classifiers(scheme)] if POOLED else []
    names += [f"{mode_method(mode, m)}/{c}" for mode in OTHER_MODES for m, c in other_mode_runs(scheme)
              if m != "baseline"]
    return sorted(names, key=lambda name: name != f"k{K_MAIN}/xgboost")  # stable: the rest keep their order


def selection_candidates(scheme):
    """The candidates of a scheme's selection, in the order ties are broken by: selection.candidates (those
    cross-validated on the scheme, e.g. no hierarchical on 4class) or all_candidates."""
    wanted = config["selection"]["candidates"]
    return all_candidates(scheme) if wanted is None else [n for n in wanted if n in all_candidates(scheme)]


def selection_classifiers(scheme):
    """The classifiers of a scheme's candidates, each once."""
    return list(dict.fromkeys(parse_candidate(name)[1] for name in selection_candidates(scheme)))


def selection_problems():
    """selection.candidates that name no cross-validated run, or leave a nested scheme none: stopped now, like the
    config, not after extraction."""
    problems = []
    wanted, runs = config["selection"]["candidates"] or [], {n for s in SCHEMES for n in all_candidates(s)}
    for name in (n for n in wanted if n not in runs):
        problems.append(f"selection.candidates: {name!r} is not cross-validated at the main balance strategy; "
                        f"candidates: {', '.join(sorted(runs))}")
    for scheme in (s for s in nested_schemes() if not selection_candidates(s)):
        problems.append(f"selection.candidates: none is cross-validated on scheme {scheme!r}")
    return problems


_stop_on(selection_problems())


def selection_inputs(wildcards):
    """One outer split's candidates: their encoded training rows (one file per representation), and their outer
    predictions and fits of the split (to score the one chosen)."""
    scheme, fold = wildcards.scheme, wildcards.fold
    candidates = [parse_candidate(n) for n in selection_candidates(scheme)]
    per_candidate = lambda name: [f"{run_dir(scheme, MAIN_STRATEGY, m)}/fold{fold}/{c}/{name}"  # noqa: E731
                                  for m, c in candidates]
    return {"encoded": [encoded_file(scheme, MAIN_STRATEGY, m, fold)
                        for m in candidate_methods(selection_candidates(scheme))],
            "predictions": per_candidate("predictions.tsv"), "fits": per_candidate("fit.json"),
            "plan": f"results/{wildcards.scheme}/{MAIN_STRATEGY}/plan.tsv",
            "folds": f"results/{wildcards.scheme}/folds.tsv"}


def selection_descriptions():
    """Per nested scheme, each candidate's row keys in results/comparison.tsv (scheme, balance, method, classifier,
    k)."""
    return {s: {n: run_descriptions([(s, MAIN_STRATEGY, *parse_candidate(n))])[0] for n in selection_candidates(s)}
            for s in nested_schemes()}


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
    if nested_schemes():
        outputs.append("results/nested.tsv")
    if config["predict"]["input"]:
        outputs.append("results/predictions/predictions.csv")
    return outputs
