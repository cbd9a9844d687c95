"""Rule ingest: find, decode, hash and validate every input image -> the image table."""
from cntem import rule_log
from cntem.io import IMAGE_COLUMNS, ingest, write_table

SHOWN_NAMES = 10  # a layout-'labels' folder can hold thousands of files the CSV does not name

log = rule_log(snakemake.log[0])
data = snakemake.params.data
rows, skipped, ignored = ingest(data["dir"], data["layout"], data["labels_csv"], data["on_bad_image"],
                               progress=True)
write_table(snakemake.output.table, rows, IMAGE_COLUMNS)
with open(snakemake.output.skipped, "w") as fh:
    fh.writelines(f"{line}\n" for line in skipped)
for line in skipped:
    log.warning("skipped %s", line)
for kind, names in sorted(ignored.items()):
    listed = ", ".join(names[:SHOWN_NAMES]) + (f", ... ({len(names) - SHOWN_NAMES} more)"
                                              if len(names) > SHOWN_NAMES else "")
    log.info("ignored %d file(s), %s: %s", len(names), kind, listed)
log.info("%d images ingested, %d skipped", len(rows), len(skipped))
