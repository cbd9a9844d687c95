"""Stage 1: the images. Demo data, ingestion, labelling per scheme, folds, balancing plans."""


rule demo_dataset:
    output:
        images=directory("results/demo/images"),
        labels="results/demo/labels.csv",
    params:
        counts=config["demo"].get("counts", {}),
        seed=config["demo"]["seed"],
        size_range=config["demo"]["size_range"],
    benchmark:
        "results/benchmarks/demo_dataset.tsv"
    log:
        "results/logs/demo_dataset.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/demo_dataset.py"


rule ingest:
    input:
        unpack(lambda wildcards: data_inputs()),
    output:
        table="results/images.tsv",
        skipped="results/logs/skipped_images.txt",
    params:
        data=config["data"],
        fingerprint=data_fingerprint(),
    benchmark:
        "results/benchmarks/ingest.tsv"
    log:
        "results/logs/ingest.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/ingest.py"


rule label_images:
    input:
        table="results/images.tsv",
    output:
        table="results/{scheme}/images.tsv",
    params:
        mapping=lambda wildcards: resolve_scheme(wildcards.scheme, config["custom_schemes"]),
        folds=config["cv"]["folds"],
    log:
        "results/logs/{scheme}/label_images.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/label_images.py"


rule folds:
    input:
        table="results/{scheme}/images.tsv",
    output:
        folds="results/{scheme}/folds.tsv",
    params:
        cv=config["cv"],
    log:
        "results/logs/{scheme}/folds.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/folds.py"


rule balance_plan:
    input:
        folds="results/{scheme}/folds.tsv",
    output:
        plan="results/{scheme}/{balance}/plan.tsv",
        model_plan="results/{scheme}/{balance}/model_plan.tsv",
    params:
        per_class=config["balance"]["per_class"],
        seed=config["balance"]["seed"],
        # the validation images' copies averaging needs too: the plans are what the manifest extracts
        averaging_group=lambda wildcards: averaging_at(wildcards.balance),
    log:
        "results/logs/{scheme}/{balance}/balance_plan.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/balance_plan.py"


rule contact_sheet:
    input:
        table="results/{scheme}/images.tsv",
    output:
        report(
            "results/{scheme}/contact_sheet.png",
            category="1. Data",
            subcategory="{scheme}",
            caption="../report/contact_sheet.rst",
        ),
    params:
        per_class=4,
        seed=config["report"]["seed"],
    log:
        "results/logs/{scheme}/contact_sheet.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/contact_sheet.py"
