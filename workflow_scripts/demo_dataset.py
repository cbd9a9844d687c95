"""Rule demo_dataset: render the synthetic TEM demo dataset (NIOSH file names + labels CSV)."""
from cntem import rule_log
from cntem.synthetic import generate_dataset

log = rule_log(snakemake.log[0])
params = snakemake.params
generate_dataset(snakemake.output.images, params.counts, labels_csv=snakemake.output.labels,
                 seed=params.seed, size_range=tuple(params.size_range), progress=True)
log.info("wrote %d images to %s", sum(params.counts.values()), snakemake.output.images)
