"""Stage 3: per (scheme, balance, K, fold): dictionary, VLAD, classifiers; per (scheme, balance, fold): the
pooled hypercolumns and their classifiers, the VGG16 + LS baseline."""


rule fit_dictionary:
    input:
        shards=all_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
    output:
        dictionary="results/{scheme}/{balance}/k{k}/fold{fold}/dictionary.h5",
    params:
        dictionary=config["dictionary"],
        pca={key: config["vlad"][key] for key in ("pca_dim", "pca_whiten")},
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/fit_dictionary/{scheme}-{balance}-k{k}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/k{k}/fold{fold}/fit_dictionary.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/fit_dictionary.py"


rule encode_vlad:
    input:
        shards=all_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
        dictionary="results/{scheme}/{balance}/k{k}/fold{fold}/dictionary.h5",
    output:
        vlad="results/{scheme}/{balance}/k{k}/fold{fold}/vlad.h5",
    params:
        power_norm=config["vlad"]["power_norm"],
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/encode_vlad/{scheme}-{balance}-k{k}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/k{k}/fold{fold}/encode_vlad.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/encode_vlad.py"


rule gather_pooled_hypercolumns:
    """One fold's entries as pooled hypercolumns, computed at extraction: what its classifiers read."""
    input:
        shards=all_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
    output:
        pooled="results/{scheme}/{balance}/pooled/fold{fold}/pooled_hypercolumns.h5",
    benchmark:
        "results/benchmarks/gather_pooled_hypercolumns/{scheme}-{balance}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/pooled/fold{fold}/gather_pooled_hypercolumns.log",
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
        method=r"k\d+|pooled",  # the baseline has its own rule
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
        shards=all_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
        folds="results/{scheme}/folds.tsv",
    output:
        predictions="results/{scheme}/{balance}/baseline/fold{fold}/linear_softmax/predictions.tsv",
        fit="results/{scheme}/{balance}/baseline/fold{fold}/linear_softmax/fit.json",
    params:
        settings=config["baseline"],
    threads: LEARNING_THREADS
    benchmark:
        "results/benchmarks/train_baseline/{scheme}-{balance}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/baseline/fold{fold}/linear_softmax.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/train_baseline.py"
