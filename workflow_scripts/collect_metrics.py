"""Rule collect_metrics: one tidy table over every run, each row stamped with the config it came from."""
import json

from cntem import rule_log
from cntem.evaluate import TIDY_COLUMNS, tidy_rows
from cntem.io import write_table

log = rule_log(snakemake.log[0])
rows = []
for run, path in zip(snakemake.params.runs, snakemake.input.metrics):
    with open(path) as fh:
        rows += tidy_rows({**run, "config": snakemake.params.config_digest}, json.load(fh))
write_table(snakemake.output[0], rows, TIDY_COLUMNS)
log.info("%d rows from %d runs (config %s)", len(rows), len(snakemake.params.runs), snakemake.params.config_digest)
