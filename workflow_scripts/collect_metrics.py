"""Rule collect_metrics: one tidy table over every run."""
import json

from cntem.evaluate import TIDY_COLUMNS, tidy_rows
from cntem.io import write_table

rows = []
for (scheme, balance, method, classifier), path in zip(snakemake.params.runs, snakemake.input.metrics):
    run = {"scheme": scheme, "balance": balance, "classifier": classifier,
           "method": "baseline" if method == "baseline" else "hcol",
           "k": "" if method == "baseline" else method[1:]}
    rows += tidy_rows(run, json.load(open(path)))
write_table(snakemake.output[0], rows, TIDY_COLUMNS)
