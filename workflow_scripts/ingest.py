"""Rule ingest: find, decode, hash and validate every input image -> the image table."""
from cntem import log_to
from cntem.io import IMAGE_COLUMNS, ingest, write_table

log = log_to(snakemake.log[0])
data = snakemake.params.data
rows, skipped = ingest(data["dir"], data["layout"], data["labels_csv"], data["on_bad_image"], progress=True)
write_table(snakemake.output.table, rows, IMAGE_COLUMNS)
with open(snakemake.output.skipped, "w") as fh:
    fh.writelines(f"{line}\n" for line in skipped)
for line in skipped:
    log.warning("skipped %s", line)
log.info("%d images ingested, %d skipped", len(rows), len(skipped))
