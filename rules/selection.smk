"""Stage 4b (beyond the paper): honest model selection. Per (scheme, outer split), the candidate methods compared by
an inner grouped cross-validation inside the split's training fold, the choice scored on its validation fold; then
each scheme's nested estimate and the plain winner that model.method auto deploys."""


rule select_method:
    input:
        unpack(selection_inputs),
    output:
        "results/{scheme}/nested/fold{fold}.json",
    params:
        candidates=selection_candidates,
        encoded=lambda wildcards: selection_encoded(wildcards.scheme, wildcards.fold),
        stack=config["fusion"]["stack"],
        settings=lambda wildcards: {c: config[c] for c in selection_classifiers(wildcards.scheme)},
        inner_folds=config["selection"]["inner_folds"],
        seed=config["selection"]["seed"],
    threads: LEARNING_THREADS
    resources:
        gpu=lambda wildcards: int("xgboost" in selection_classifiers(wildcards.scheme)),
    benchmark:
        "results/benchmarks/select_method/{scheme}-fold{fold}.tsv"
    log:
        "results/logs/{scheme}/nested/fold{fold}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/select_method.py"


rule nested_cv:
    input:
        splits=[f"results/{s}/nested/fold{f}.json" for s in SPACE.nested_schemes() for f in SPLITS],
        comparison="results/comparison.tsv",
    output:
        table=report("results/nested.tsv", category="2. Metrics", caption="../report/nested.rst"),
        json="results/nested.json",
    params:
        candidates={s: [m.name for m in SPACE.candidates(s)] for s in SPACE.nested_schemes()},
        balance=MAIN_STRATEGY,
        repeats=REPEATS,
    log:
        "results/logs/nested_cv.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/nested_cv.py"
