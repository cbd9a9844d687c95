"""Stage 5: a model trained on every labelled image, and prediction on new images."""


rule train_model:
    input:
        unpack(model_shards),
        plan=f"results/{{scheme}}/{MAIN_STRATEGY}/model_plan.tsv",
        folds="results/{scheme}/folds.tsv",
        # model.method auto: the selection's winner, from the plain CV of all candidates
        selection=["results/nested.json"] if SPACE.auto_model else [],
    output:
        model="results/model/{scheme}/model.json",
    params:
        # Only what changes the model: editing predict.input or report.* must not retrain it.
        **model_params(),
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/train_model/{scheme}.tsv"
    log:
        "results/logs/model/{scheme}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/train_model.py"


rule predict:
    input:
        model=f"results/model/{MODEL_SCHEME}/model.json",
        # the bundle's calibration, prediction sets and share estimators (rules/uncertainty.smk)
        uncertainty=f"results/model/{MODEL_SCHEME}/uncertainty.json",
        images=config["predict"]["input"] or [],
    output:
        # cntem.predict.output_paths of predictions.csv
        predictions="results/predictions/predictions.csv",
        shares="results/predictions/predictions_shares.csv",
        review="results/predictions/predictions_review.csv",
        # files that could not be decoded (file, reason): skipped, the others are still classified
        unreadable="results/predictions/predictions_unreadable.csv",
        shares_figure=report("results/predictions/predictions_shares.png", category="6. Prediction",
                             caption="../report/prediction_shares.rst"),
        review_figure=report("results/predictions/predictions_review.png", category="6. Prediction",
                             caption="../report/prediction_review.rst"),
        page="results/predictions/predictions.html",
        page_files=directory("results/predictions/predictions_files"),
    params:
        title=lambda wildcards: f"{config['predict']['input']} with the {MODEL_SCHEME} model",
        gallery_size=config["report"]["gallery_size"],
        weights=config["weights"],
        taps=config["hypercolumns"]["taps"],
        # the input mode the model must have been trained in: its method's, unless the selection chose it (auto)
        input_mode=None if SPACE.auto_model else SPACE.model_candidates()[0].representation.input_mode,
        averaging=group_setting(config["predict"]["rotation_averaging"]),
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/predict.tsv"
    log:
        "results/logs/predict.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/predict.py"
