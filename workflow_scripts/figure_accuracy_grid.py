"""Rule figure_accuracy_grid: the paper's Fig. 8 (4 classes) / Fig. 9 (8 classes)."""
import json

from cntem import rule_log
from cntem.plots import accuracy_grid

log = rule_log(snakemake.log[0])
runs = []
for path in snakemake.input.metrics:
    with open(path) as fh:
        runs.append(json.load(fh))
accuracy_grid(runs, snakemake.output[0], snakemake.wildcards.scheme)
log.info("accuracy grid of %s from %d runs", snakemake.wildcards.scheme, len(runs))
