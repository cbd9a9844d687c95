"""Rule demo_dataset: render the synthetic TEM demo dataset (NIOSH file names + labels CSV)."""
from cntem import log_to
from cntem.synthetic import generate_dataset

log = log_to(snakemake.log[0])
demo = snakemake.params.demo
generate_dataset(snakemake.output.images, demo["counts"], labels_csv=snakemake.output.labels,
                 seed=demo["seed"], size_range=tuple(demo["size_range"]), progress=True)
log.info("wrote %d images to %s", sum(demo["counts"].values()), snakemake.output.images)
