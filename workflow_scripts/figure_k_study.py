"""Rule figure_k_study: ESI Fig. S1 (accuracy vs K) and S2 (fit time vs K)."""
import json

from cntem import rule_log
from cntem.plots import k_study

log = rule_log(snakemake.log[0])
runs = []
for path in snakemake.input.metrics:
    with open(path) as fh:
        runs.append(json.load(fh))
k_study(runs, snakemake.output.accuracy, snakemake.output.time, snakemake.wildcards.scheme)
log.info("K study of %s from %d runs", snakemake.wildcards.scheme, len(runs))
