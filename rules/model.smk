"""Stage 5: a model trained on every labelled image, and prediction on new images."""


rule train_model:
    input:
        shards=all_shards,
        images="results/{scheme}/images.tsv",
    output:
        model="results/model/{scheme}/model.json",
    params:
        k=K_MAIN,
        classifier=config["model"]["classifier"],
        balance=MAIN_STRATEGY,
        config=config,
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/train_model/{scheme}.tsv"
    log:
        "results/logs/model/{scheme}.log",
    script:
        "../workflow_scripts/train_model.py"


rule predict:
    input:
        model=f"results/model/{MODEL_SCHEME}/model.json",
        images=config["predict"]["input"] or [],
    output:
        predictions="results/predictions/predictions.csv",
        shares="results/predictions/predictions_shares.csv",
    params:
        weights=config["weights"],
        weights_cache=config["weights_cache"],
        taps=config["hypercolumns"]["taps"],
        device=config["device"],
        batch_size=config["hypercolumns"]["batch_size"],
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/predict.tsv"
    log:
        "results/logs/predict.log",
    script:
        "../workflow_scripts/predict_images.py"
