"""Rule label_images: the image table restricted to one class scheme, with a class column."""
from cntem import rule_log
from cntem.io import IMAGE_COLUMNS, label_for_scheme, read_table, write_table

log = rule_log(snakemake.log[0])
labelled, excluded = label_for_scheme(read_table(snakemake.input.table), snakemake.params.mapping,
                                      snakemake.params.folds, scheme_name=snakemake.wildcards.scheme)
write_table(snakemake.output.table, labelled, IMAGE_COLUMNS + ["class"])
for label, count in sorted(excluded.items()):
    log.info("excluded %d image(s) labelled %s (not in scheme %s)", count, label, snakemake.wildcards.scheme)
log.info("%d images in scheme %s", len(labelled), snakemake.wildcards.scheme)
