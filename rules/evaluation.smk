"""Stage 4: cross-validated metrics, the leakage check, the paper's figures, provenance."""


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/{scheme}/{balance}/{method}/metrics.json",
        leakage="results/{scheme}/{balance}/{method}/leakage.txt",
    params:
        repeats=REPEATS,
        # what the figures say of the run: how its features were extracted
        extraction=lambda wildcards: extraction(Method.parse(wildcards.method).representation.input_mode),
    log:
        "results/logs/{scheme}/{balance}/{method}/evaluate.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule collect_metrics:
    input:
        metrics=metrics_files(SPACE.runs()),
    output:
        report("results/metrics.tsv", category="2. Metrics", caption="../report/metrics.rst"),
    params:
        runs=[run.columns() for run in SPACE.runs()],
        config_digest=CONFIG_DIGEST,
    log:
        "results/logs/collect_metrics.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/collect_metrics.py"


rule compare_methods:
    input:
        metrics="results/metrics.tsv",
    output:
        report("results/comparison.tsv", category="2. Metrics", caption="../report/comparison.rst"),
    log:
        "results/logs/compare_methods.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/compare_methods.py"


rule leakage_check:
    input:
        checks=[f"results/{run.name}/leakage.txt" for run in SPACE.runs()],
    output:
        report("results/leakage_check.txt", category="2. Metrics", caption="../report/leakage.rst"),
    log:
        "results/logs/leakage_check.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/leakage_check.py"


rule figure_accuracy_grid:
    input:
        metrics=main_metrics,
    output:
        report("results/figures/{scheme}/accuracy_grid.png", category="3. Figures", subcategory="{scheme}",
               caption="../report/accuracy_grid.rst"),
    log:
        "results/logs/figures/{scheme}/accuracy_grid.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_accuracy_grid.py"


rule figure_confusion_matrices:
    input:
        metrics=main_strategy_metrics,
    output:
        report("results/figures/{scheme}/confusion_matrices.png", category="3. Figures", subcategory="{scheme}",
               caption="../report/confusion_matrices.rst"),
    log:
        "results/logs/figures/{scheme}/confusion_matrices.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_confusion_matrices.py"


rule figure_tsne:
    input:
        # one named list per balance strategy: the script never parses paths
        **{b: expand("results/{{scheme}}/{balance}/{representation}/fold{fold}/vlad.h5", balance=b,
                     representation=SPACE.paper_method().representation.name, fold=FOLDS)
           for b in STRATEGIES},
    output:
        report("results/figures/{scheme}/tsne.png", category="3. Figures", subcategory="{scheme}",
               caption="../report/tsne.rst"),
    params:
        strategies=STRATEGIES,
        perplexity=config["report"]["tsne_perplexity"],
        seed=config["report"]["seed"],
    log:
        "results/logs/figures/{scheme}/tsne.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_tsne.py"


rule figure_k_study:
    input:
        metrics=lambda wildcards: metrics_files(
            [Run(wildcards.scheme, MAIN_STRATEGY, m) for m in SPACE.k_study(wildcards.scheme)]),
    output:
        accuracy=report("results/figures/{scheme}/k_study.png", category="3. Figures", subcategory="{scheme}",
                        caption="../report/k_study.rst"),
        time=report("results/figures/{scheme}/fit_time.png", category="3. Figures", subcategory="{scheme}",
                    caption="../report/fit_time.rst"),
    log:
        "results/logs/figures/{scheme}/k_study.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_k_study.py"


rule figure_comparison:
    input:
        comparison="results/comparison.tsv",
    output:
        report("results/figures/{scheme}/comparison.png", category="3. Figures", subcategory="{scheme}",
               caption="../report/comparison_figure.rst"),
    params:
        density=config["hypercolumns"]["density"],
    log:
        "results/logs/figures/{scheme}/comparison.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_comparison.py"


rule figure_misclassified:
    input:
        predictions=expand("results/{{scheme}}/{balance}/{method}/fold{fold}/{classifier}/predictions.tsv",
                           balance=MAIN_STRATEGY, method=SPACE.paper_method().representation.name,
                           classifier=SPACE.paper_method().classifier, fold=FOLDS),
        images="results/{scheme}/images.tsv",
    output:
        report("results/figures/{scheme}/misclassified.png", category="3. Figures", subcategory="{scheme}",
               caption="../report/misclassified.rst"),
    params:
        n=config["report"]["gallery_size"],
    log:
        "results/logs/figures/{scheme}/misclassified.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_misclassified.py"


rule figure_activations:
    input:
        images="results/{scheme}/images.tsv",
    output:
        report("results/figures/{scheme}/activations.png", category="3. Figures", subcategory="{scheme}",
               caption="../report/activations.rst"),
    params:
        extraction=EXTRACTION,
        weights=config["weights"],
        seed=config["report"]["seed"],
    log:
        "results/logs/figures/{scheme}/activations.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/figure_activations.py"


rule provenance:
    output:
        versions=report("results/software_versions.tsv", category="4. Provenance", caption="../report/versions.rst"),
        config=report("results/config.yaml", category="4. Provenance", caption="../report/config.rst"),
    params:
        config=config,
        config_digest=CONFIG_DIGEST,
    log:
        "results/logs/provenance.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/provenance.py"
