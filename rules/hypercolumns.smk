"""Stage 2: VGG16 hypercolumns for every (image, rotation) any balancing plan uses, in HDF5 shards."""


checkpoint hypercolumn_manifest:
    input:
        table="results/images.tsv",
        # the cross-validation plans and the final model's training set
        plans=expand("results/{scheme}/{balance}/{plan}.tsv", scheme=SCHEMES, balance=STRATEGIES,
                     plan=["plan", "model_plan"]),
    output:
        manifest="results/hypercolumns/manifest.tsv",
    params:
        extraction=EXTRACTION,
        shards=config["hypercolumns"]["shards"],
    log:
        "results/logs/hypercolumn_manifest.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/hypercolumn_manifest.py"


rule hypercolumns:
    """Target: every hypercolumn shard (e.g. `snakemake --cores all hypercolumns`)."""
    input:
        all_shards,


rule extract_hypercolumns:
    input:
        # The shard's own images only: adding images elsewhere leaves this job up to date.
        images=shard_images,
    output:
        shard="results/hypercolumns/shard-{shard}.h5",
    params:
        members=shard_members,
        manifest="results/hypercolumns/manifest.tsv",
        extraction=EXTRACTION,
        weights=config["weights"],
    threads: CORES
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/extract_hypercolumns/shard-{shard}.tsv"
    log:
        "results/logs/hypercolumns/shard-{shard}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/extract_hypercolumns.py"
