"""Stage 2: VGG16 hypercolumns for every (image, orientation: tta.orient) any balancing plan uses, in HDF5 shards: one store per
input mode (hypercolumns.input_mode, and representations.input_modes)."""


checkpoint hypercolumn_manifest:
    input:
        table="results/images.tsv",
        # the cross-validation plans and the final model's training set
        plans=expand("results/{scheme}/{balance}/{plan}.tsv", scheme=SCHEMES, balance=STRATEGIES,
                     plan=["plan", "model_plan"]),
    output:
        manifest="results/hypercolumns/{input_mode}/manifest.tsv",
    params:
        extraction=lambda wildcards: extraction(wildcards.input_mode),
        shards=config["hypercolumns"]["shards"],
    log:
        "results/logs/hypercolumns/{input_mode}/manifest.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/hypercolumn_manifest.py"


rule hypercolumns:
    """Target: every hypercolumn shard of every input mode (e.g. `snakemake --cores all hypercolumns`)."""
    input:
        lambda wildcards: [shard for mode in INPUT_MODES for shard in mode_shards(mode)],


rule extract_hypercolumns:
    input:
        # The shard's entries are the manifest's rows of this shard, fixed once it is extracted (shards are
        # append-only): a rewritten manifest or removed images leave it up to date, hence ancient() and no image
        # inputs. A replaced image goes to a new shard (shards.shard_manifest).
        manifest=ancient("results/hypercolumns/{input_mode}/manifest.tsv"),
    output:
        shard="results/hypercolumns/{input_mode}/shard-{shard}.h5",
    params:
        extraction=lambda wildcards: extraction(wildcards.input_mode),
        weights=config["weights"],
    threads: CORES
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/extract_hypercolumns/{input_mode}/shard-{shard}.tsv"
    log:
        "results/logs/hypercolumns/{input_mode}/shard-{shard}.log",
    conda:
        "../envs/cntem.yaml"
    script:
        "../workflow_scripts/extract_hypercolumns.py"
