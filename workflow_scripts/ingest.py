"""Rule ingest: find, decode, hash and validate every input image -> the image table."""
from cntem import rule_log
from cntem.io import IMAGE_COLUMNS, ingest, write_table
from cntem.schemes import resolve_scheme

SHOWN_NAMES = 10  # a layout-'labels' folder can hold thousands of files the CSV does not name

log = rule_log(snakemake.log[0])
data = snakemake.params.data
# The schemes only check the labels here (every problem in one message, before any network runs); they are
# not params: label_images applies them, and a scheme added later must not re-run ingestion.
config = snakemake.config
schemes = {name: resolve_scheme(name, config["custom_schemes"]) for name in config["schemes"]}
rows, skipped, ignored = ingest(data["dir"], data["layout"], data["labels_csv"], data["on_bad_image"],
                               progress=True, schemes=schemes, n_folds=config["cv"]["folds"])
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
