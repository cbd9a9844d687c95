"""Rule figure_misclassified: the most confidently misclassified validation images."""
from cntem import rule_log
from cntem.io import read_table
from cntem.plots import misclassified_gallery

log = rule_log(snakemake.log[0])
predictions = [r for p in snakemake.input.predictions for r in read_table(p)]
images = {r["id"]: r["path"] for r in read_table(snakemake.input.images)}
misclassified_gallery(predictions, images, snakemake.output[0], snakemake.params.n)
log.info("%d of %d validation predictions misclassified", sum(r["true"] != r["predicted"] for r in predictions),
         len(predictions))
