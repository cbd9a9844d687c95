"""Stage 3: per (scheme, balance, representation, split): the representation's dictionary and encoded entries, and
each classifier's fit and predictions (cntem.runs names them). At the balance strategies evaluated with rotation
averaging, the fold files also hold each validation image's rotated copies, and the fold jobs (train_classifier_tta,
train_baseline_tta) also write the averaged predictions."""

# One split's files of a representation, as a pattern (common.smk's fold_dir gives them for a run).
FOLD_FILES = "results/{scheme}/{balance}/{representation}/fold{fold}"


rule fit_dictionary:
    input:
        shards=representation_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
    output:
        dictionary="results/{scheme}/{balance}/{representation}/fold{fold}/dictionary.h5",
    wildcard_constraints:
        representation=kind_pattern("vlad"),
    params:
        k=vlad_k,
        dictionary=config["dictionary"],
        pca={key: config["vlad"][key] for key in ("pca_dim", "pca_whiten")},
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/fit_dictionary/{scheme}-{balance}-{representation}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/fit_dictionary.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/fit_dictionary.py"


rule encode_vlad:
    input:
        shards=representation_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
        dictionary="results/{scheme}/{balance}/{representation}/fold{fold}/dictionary.h5",
    output:
        vlad="results/{scheme}/{balance}/{representation}/fold{fold}/vlad.h5",
    wildcard_constraints:
        representation=kind_pattern("vlad"),
    params:
        power_norm=config["vlad"]["power_norm"],
        rotated=lambda wildcards: wildcards.balance in TTA_BALANCES,
    threads: LEARNING_THREADS
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/encode_vlad/{scheme}-{balance}-{representation}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/encode_vlad.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/encode_vlad.py"


rule gather_pooled_hypercolumns:
    """One fold's entries as pooled hypercolumns, computed at extraction: what its classifiers read."""
    input:
        shards=representation_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
    output:
        pooled="results/{scheme}/{balance}/{representation}/fold{fold}/pooled_hypercolumns.h5",
    wildcard_constraints:
        representation=kind_pattern("pooled"),
    params:
        rotated=lambda wildcards: wildcards.balance in TTA_BALANCES,
    benchmark:
        "results/benchmarks/gather_pooled_hypercolumns/{scheme}-{balance}-{representation}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/gather_pooled_hypercolumns.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/gather_pooled_hypercolumns.py"


rule train_classifier:
    """One classifier on one fold of a VLAD or pooled representation."""
    input:
        encoded=encoded_fold,
        folds="results/{scheme}/folds.tsv",
    output:
        predictions="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/predictions.tsv",
        fit="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/fit.json",
    wildcard_constraints:
        representation=f"{kind_pattern('vlad')}|{kind_pattern('pooled')}",  # the top layer has its own rule
    params:
        settings=lambda wildcards: config[wildcards.classifier],
    threads: LEARNING_THREADS
    resources:
        gpu=lambda wildcards: int(wildcards.classifier == "xgboost"),
    benchmark:
        "results/benchmarks/train_classifier/{scheme}-{balance}-{representation}-fold{fold}-{classifier}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/{classifier}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/train_classifier.py"


rule train_baseline:
    """The paper's baseline on one fold: VGG16's pooled top layer, read from the shards, with a linear softmax."""
    input:
        shards=representation_shards,
        plan="results/{scheme}/{balance}/plan.tsv",
        folds="results/{scheme}/folds.tsv",
    output:
        predictions="results/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax/predictions.tsv",
        fit="results/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax/fit.json",
    wildcard_constraints:
        representation=kind_pattern("top"),
    params:
        settings=config["baseline"],
    threads: LEARNING_THREADS
    benchmark:
        "results/benchmarks/train_baseline/{scheme}-{balance}-{representation}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/train_baseline.py"


if TTA_BALANCES:

    # Rotation averaging: at the balance strategies it names, the same fold jobs also predict the validation images'
    # rotated copies of their fold file and write the averaged predictions; preferred where both rules match.
    use rule train_classifier as train_classifier_tta with:
        output:
            predictions="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/predictions.tsv",
            fit="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/fit.json",
            averaged=f"{FOLD_FILES}/{{classifier}}/{predictions_file(ROTATION_AVERAGING)}",
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            representation=f"{kind_pattern('vlad')}|{kind_pattern('pooled')}",

    use rule train_baseline as train_baseline_tta with:
        output:
            predictions="results/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax/predictions.tsv",
            fit="results/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax/fit.json",
            averaged=f"{FOLD_FILES}/linear_softmax/{predictions_file(ROTATION_AVERAGING)}",
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            representation=kind_pattern("top"),

    ruleorder: train_classifier_tta > train_classifier
    ruleorder: train_baseline_tta > train_baseline
