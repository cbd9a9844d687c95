"""The inputs of fit_uncertainty (rules/uncertainty.smk), the out-of-fold predictions of the run the model
deploys, and its settings. In a file of their own, as Snakemake's lint wants functions apart from rules."""


def deployed_candidates(scheme):
    """The runs the model may deploy, as "<method>/<classifier>" at the main balance strategy: model.method explicit,
    the configured one; auto, every selection candidate (fit_uncertainty takes the winner model.json records)."""
    model = config["model"]
    if model["method"] == "auto":
        return selection_candidates(scheme)
    method = "pooled" if model["representation"] == "pooled" else f"k{K_MAIN}"
    return [f"{method}/{model['classifier']}"]


def deployed_run_predictions(wildcards):
    """Repeat 0's per-fold predictions (each micrograph once) of each of deployed_candidates, run after run."""
    runs = [parse_candidate(name) for name in deployed_candidates(wildcards.scheme)]
    return [f"{run_dir(wildcards.scheme, MAIN_STRATEGY, method)}/fold{f}/{classifier}/predictions.tsv"
            for method, classifier in runs for f in FOLDS]


def uncertainty_settings():
    """config uncertainty, with interval_holdout null resolved to one fold's share of the groups."""
    settings = dict(config["uncertainty"])
    settings["interval_holdout"] = settings["interval_holdout"] or 1 / len(FOLDS)
    return settings


def uncertainty_outputs():
    return [f"results/model/{MODEL_SCHEME}/uncertainty.json"]
