"""Stage 5b (beyond the paper): what the deployed model's answers are worth. Calibration, conformal prediction sets
and class-share estimators fitted on the out-of-fold predictions of the run the model deploys, validated on its
held-out folds; uncertainty.json joins the model bundle (docs/uncertainty.md)."""


def deployed_run_predictions(wildcards):
    """Repeat 0's per-fold predictions of each run the model may deploy, run after run, as "<method>/<classifier>":
    model.method explicit, the configured one; auto, every selection candidate (fit_uncertainty takes the winner
    model.json records)."""
    model = config["model"]
    if model["method"] == "explicit":
        method = "pooled" if model["representation"] == "pooled" else f"k{K_MAIN}"
        names = [f"{method}/{model['classifier']}"]
    else:
        names = selection_candidates(wildcards.scheme)
    files = [f"{run_dir(wildcards.scheme, MAIN_STRATEGY, n.split('/')[0])}/fold{f}/{n.split('/')[1]}/predictions.tsv"
             for n in names for f in FOLDS]
    return {"names": names, "files": files}


def uncertainty_settings():
    settings = dict(config["uncertainty"])
    settings["interval_holdout"] = settings["interval_holdout"] or 1 / len(FOLDS)
    return settings


rule fit_uncertainty:
    input:
        predictions=lambda wildcards: deployed_run_predictions(wildcards)["files"],
        folds="results/{scheme}/folds.tsv",
        model="results/model/{scheme}/model.json",
    output:
        uncertainty="results/model/{scheme}/uncertainty.json",
        reliability=report("results/model/{scheme}/reliability.png", category="5. Uncertainty",
                           caption="../report/reliability.rst"),
        share_figure=report("results/model/{scheme}/share_validation.png", category="5. Uncertainty",
                            caption="../report/share_validation_figure.rst"),
        calibration=report("results/uncertainty/{scheme}/calibration.tsv", category="5. Uncertainty",
                           caption="../report/calibration.rst"),
        coverage=report("results/uncertainty/{scheme}/coverage.tsv", category="5. Uncertainty",
                        caption="../report/coverage.rst"),
        shares=report("results/uncertainty/{scheme}/share_validation.tsv", category="5. Uncertainty",
                      caption="../report/share_validation.rst"),
        samples="results/uncertainty/{scheme}/share_validation_samples.tsv",
    params:
        candidates=lambda wildcards: deployed_run_predictions(wildcards)["names"],
        balance=MAIN_STRATEGY,
        settings=uncertainty_settings(),
    log:
        "results/logs/uncertainty/{scheme}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/fit_uncertainty.py"


def uncertainty_outputs():
    return [f"results/model/{MODEL_SCHEME}/uncertainty.json"]
