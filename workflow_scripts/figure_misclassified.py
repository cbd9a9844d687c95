"""Rule figure_misclassified: the most confidently misclassified validation images."""
from cntem.io import read_table
from cntem.plots import misclassified_gallery

predictions = [r for p in snakemake.input.predictions for r in read_table(p)]
images = {r["id"]: r["path"] for r in read_table(snakemake.input.images)}
misclassified_gallery(predictions, images, snakemake.output[0], snakemake.params.n)
