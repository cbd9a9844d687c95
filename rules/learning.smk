"""Stage 3: per (scheme, balance, K, fold): dictionary, VLAD, classifiers; per (scheme, balance, fold): the
pooled hypercolumns and their classifiers, the VGG16 + LS baseline. With evaluation.rotation_averaging, the fold
jobs of the rotation-averaged runs (train_classifier_tta, train_baseline_tta) also write predictions_tta.tsv."""


rule fit_dictionary:
    input:
        shards=method_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
    output:
        dictionary="results/{scheme}/{balance}/{method}/fold{fold}/dictionary.h5",
    wildcard_constraints:
        method=VLAD_METHOD,
    params:
        k=vlad_k,
        dictionary=config["dictionary"],
        pca={key: config["vlad"][key] for key in ("pca_dim", "pca_whiten")},
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/fit_dictionary/{scheme}-{balance}-{method}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{method}/fold{fold}/fit_dictionary.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/fit_dictionary.py"


rule encode_vlad:
    input:
        shards=method_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
        dictionary="results/{scheme}/{balance}/{method}/fold{fold}/dictionary.h5",
    output:
        vlad="results/{scheme}/{balance}/{method}/fold{fold}/vlad.h5",
    wildcard_constraints:
        method=VLAD_METHOD,
    params:
        power_norm=config["vlad"]["power_norm"],
        rotated=lambda wildcards: wildcards.balance in TTA_BALANCES and wildcards.method in TTA_ENCODED,
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/encode_vlad/{scheme}-{balance}-{method}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{method}/fold{fold}/encode_vlad.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/encode_vlad.py"


rule gather_pooled_hypercolumns:
    """One fold's entries as pooled hypercolumns, computed at extraction: what its classifiers read."""
    input:
        shards=method_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
    output:
        pooled="results/{scheme}/{balance}/{method}/fold{fold}/pooled_hypercolumns.h5",
    wildcard_constraints:
        method=POOLED_METHOD,
    params:
        rotated=lambda wildcards: wildcards.balance in TTA_BALANCES and wildcards.method in TTA_ENCODED,
    benchmark:
        "results/benchmarks/gather_pooled_hypercolumns/{scheme}-{balance}-{method}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{method}/fold{fold}/gather_pooled_hypercolumns.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/gather_pooled_hypercolumns.py"


rule train_classifier:
    """One classifier on one fold of a representation: VLAD at K (method k<K>) or the pooled hypercolumns."""
    input:
        encoded=encoded_fold,
        folds="results/{scheme}/folds.tsv",
    output:
        predictions="results/{scheme}/{balance}/{method}/fold{fold}/{classifier}/predictions.tsv",
        fit="results/{scheme}/{balance}/{method}/fold{fold}/{classifier}/fit.json",
    wildcard_constraints:
        method=f"{VLAD_METHOD}|{POOLED_METHOD}",  # the baseline has its own rule
    params:
        settings=lambda wildcards: config[wildcards.classifier],
    threads: LEARNING_THREADS
    resources:
        gpu=lambda wildcards: int(wildcards.classifier == "xgboost"),
    benchmark:
        "results/benchmarks/train_classifier/{scheme}-{balance}-{method}-fold{fold}-{classifier}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{method}/fold{fold}/{classifier}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/train_classifier.py"


rule train_baseline:
    input:
        shards=method_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
        folds="results/{scheme}/folds.tsv",
    output:
        predictions="results/{scheme}/{balance}/{method}/fold{fold}/linear_softmax/predictions.tsv",
        fit="results/{scheme}/{balance}/{method}/fold{fold}/linear_softmax/fit.json",
    wildcard_constraints:
        method=BASELINE_METHOD,
    params:
        settings=config["baseline"],
    threads: LEARNING_THREADS
    benchmark:
        "results/benchmarks/train_baseline/{scheme}-{balance}-{method}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{method}/fold{fold}/linear_softmax.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/train_baseline.py"


if TTA_BALANCES:

    # Rotation averaging (rotation_averaged_runs): the same fold jobs, which also predict the validation images'
    # rotated copies of their fold file and write the averaged predictions; preferred where both rules match.
    use rule train_classifier as train_classifier_tta with:
        output:
            predictions="results/{scheme}/{balance}/{method}/fold{fold}/{classifier}/predictions.tsv",
            fit="results/{scheme}/{balance}/{method}/fold{fold}/{classifier}/fit.json",
            averaged="results/{scheme}/{balance}/{method}/fold{fold}/{classifier}/predictions_tta.tsv",
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            method="|".join(TTA_ENCODED),
            classifier="xgboost",

    use rule train_baseline as train_baseline_tta with:
        output:
            predictions="results/{scheme}/{balance}/{method}/fold{fold}/linear_softmax/predictions.tsv",
            fit="results/{scheme}/{balance}/{method}/fold{fold}/linear_softmax/fit.json",
            averaged="results/{scheme}/{balance}/{method}/fold{fold}/linear_softmax/predictions_tta.tsv",
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            method="baseline",

    ruleorder: train_classifier_tta > train_classifier
    ruleorder: train_baseline_tta > train_baseline
