"""Stage 5b (beyond the paper): what the deployed model's answers are worth. Calibration, conformal prediction sets
and class-share estimators fitted on the out-of-fold predictions of the run the model deploys, validated on its
held-out folds; uncertainty.json joins the model bundle (docs/uncertainty.md)."""


rule fit_uncertainty:
    input:
        predictions=deployed_run_predictions,
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
        candidates=deployed_candidates,
        balance=MAIN_STRATEGY,
        settings=uncertainty_settings(),
    log:
        "results/logs/uncertainty/{scheme}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/fit_uncertainty.py"

