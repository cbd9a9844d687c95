"""Stage 3: per (scheme, balance, representation, split): the representation's dictionary and encoded entries, and
each classifier's fit and predictions (cntem.runs names them). At the balance strategies evaluated with test-time
averaging, the fold files also hold each validation image's rotated (with d8 also mirrored) copies, and the fold jobs
(train_classifier_tta, train_baseline_tta) also write the averaged predictions."""

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
        rotated=lambda wildcards: bool(averaging_at(wildcards.balance)),
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
        rotated=lambda wildcards: bool(averaging_at(wildcards.balance)),
    benchmark:
        "results/benchmarks/gather_pooled_hypercolumns/{scheme}-{balance}-{representation}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/gather_pooled_hypercolumns.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/gather_pooled_hypercolumns.py"


rule train_classifier:
    """One classifier on one fold of a VLAD or pooled representation, or of several side by side (early fusion: read
    from their fold files, standardised per block on the training rows)."""
    input:
        encoded=encoded_fold,
        folds="results/{scheme}/folds.tsv",
    output:
        predictions="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/predictions.tsv",
        fit="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/fit.json",
    wildcard_constraints:
        representation=f"{kind_pattern('vlad')}|{kind_pattern('pooled')}|{kind_pattern(FUSED)}",  # not the top layer
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


rule late_fusion:
    """One fold of a late fusion: its members' class probabilities of the validation images combined, by their mean
    or by a combiner stacked on their out-of-fold probabilities of the training rows (inner grouped CV)."""
    input:
        unpack(late_fusion_inputs),
    output:
        predictions="results/{scheme}/{balance}/{representation}/fold{fold}/{estimator}/predictions.tsv",
        fit="results/{scheme}/{balance}/{representation}/fold{fold}/{estimator}/fit.json",
        combiner="results/{scheme}/{balance}/{representation}/fold{fold}/{estimator}/combiner.joblib",
    wildcard_constraints:
        estimator=LATE_ESTIMATOR_PATTERN,
    params:
        settings=late_fusion_settings,
        stack=config["fusion"]["stack"],
    threads: LEARNING_THREADS
    benchmark:
        "results/benchmarks/late_fusion/{scheme}-{balance}-{representation}-fold{fold}-{estimator}.tsv"
    log:
        "results/logs/{scheme}/{balance}/{representation}/fold{fold}/{estimator}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/late_fusion.py"


if TTA_BALANCES:

    # Test-time averaging: at the balance strategies it names, the same fold jobs also predict the validation images'
    # copies in the other orientations of AVERAGING_GROUP, from their fold file, and write the averaged predictions;
    # preferred where both rules match.
    use rule train_classifier as train_classifier_tta with:
        output:
            predictions="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/predictions.tsv",
            fit="results/{scheme}/{balance}/{representation}/fold{fold}/{classifier}/fit.json",
            averaged=f"{FOLD_FILES}/{{classifier}}/{predictions_file(AVERAGING_GROUP)}",
        params:
            averaging_group=AVERAGING_GROUP,
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            representation=f"{kind_pattern('vlad')}|{kind_pattern('pooled')}|{kind_pattern(FUSED)}",

    use rule train_baseline as train_baseline_tta with:
        output:
            predictions="results/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax/predictions.tsv",
            fit="results/{scheme}/{balance}/{representation}/fold{fold}/linear_softmax/fit.json",
            averaged=f"{FOLD_FILES}/linear_softmax/{predictions_file(AVERAGING_GROUP)}",
        params:
            averaging_group=AVERAGING_GROUP,
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            representation=kind_pattern("top"),

    rule late_fusion_averaged:
        """One fold of a late fusion at an averaged balance strategy: its combiner applied to the members' averaged
        probabilities (method <representation>/<combiner>-<classifiers>-<averaging group>)."""
        input:
            averaged=late_fusion_averaged_inputs,
            fit="results/{scheme}/{balance}/{representation}/fold{fold}/{estimator}/fit.json",
            combiner="results/{scheme}/{balance}/{representation}/fold{fold}/{estimator}/combiner.joblib",
        output:
            averaged=f"{FOLD_FILES}/{{estimator}}/{predictions_file(AVERAGING_GROUP)}",
        wildcard_constraints:
            balance="|".join(TTA_BALANCES),
            estimator=LATE_ESTIMATOR_PATTERN,
        log:
            f"results/logs/{{scheme}}/{{balance}}/{{representation}}/fold{{fold}}/{{estimator}}-{AVERAGING_GROUP}.log",
        conda:
            "../envs/cntem.yaml"
        script:
            "../workflow_scripts/late_fusion_averaged.py"

    ruleorder: train_classifier_tta > train_classifier
    ruleorder: train_baseline_tta > train_baseline
