"""The inputs of fit_uncertainty (rules/uncertainty.smk), the out-of-fold predictions of the run the model
deploys, and its settings. In a file of their own, as Snakemake's lint wants functions apart from rules."""


def deployed_candidates(wildcards):
    """The methods the model may deploy (MethodSpace.model_candidates): the configured one, or with model.method auto
    every selection candidate (fit_uncertainty takes the one model.json records)."""
    return [m.name for m in SPACE.model_candidates()]


def deployed_run_predictions(wildcards):
    """Repeat 0's per-fold predictions (each micrograph once) of each deployed candidate at the main balance
    strategy, candidate after candidate."""
    return [f"{method_dir(wildcards.scheme, MAIN_STRATEGY, m, f)}/{m.predictions_file}"
            for m in SPACE.model_candidates() for f in FOLDS]


def uncertainty_settings():
    """config uncertainty, with interval_holdout null resolved to one fold's share of the groups."""
    settings = dict(config["uncertainty"])
    settings["interval_holdout"] = settings["interval_holdout"] or 1 / len(FOLDS)
    return settings


def uncertainty_outputs():
    return [f"results/model/{MODEL_SCHEME}/uncertainty.json"]
