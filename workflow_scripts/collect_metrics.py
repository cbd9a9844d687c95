"""Rule collect_metrics: one tidy table over every run, each row stamped with the config it came from."""
import json

from cntem import rule_log
from cntem.evaluate import TIDY_COLUMNS, tidy_rows
from cntem.io import write_table

log = rule_log(snakemake.log[0])
rows = []
for (scheme, balance, method, classifier), path in zip(snakemake.params.runs, snakemake.input.metrics):
    run = {"scheme": scheme, "balance": balance, "classifier": classifier,
           "method": "baseline" if method == "baseline" else "hcol",
           "k": "" if method == "baseline" else method[1:], "config": snakemake.params.config_digest}
    with open(path) as fh:
        rows += tidy_rows(run, json.load(fh))
write_table(snakemake.output[0], rows, TIDY_COLUMNS)
log.info("%d rows from %d runs (config %s)", len(rows), len(snakemake.params.runs), snakemake.params.config_digest)
