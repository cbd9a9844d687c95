"""Rule figure_accuracy_grid: the paper's Fig. 8 (4 classes) / Fig. 9 (8 classes)."""
import json

from cntem import rule_log
from cntem.plots import accuracy_grid

log = rule_log(snakemake.log[0])
metrics = {}
for panel, path in zip(snakemake.params.panels, snakemake.input.metrics):
    with open(path) as fh:
        metrics[tuple(panel)] = json.load(fh)
accuracy_grid(metrics, snakemake.output[0], snakemake.wildcards.scheme)
log.info("accuracy grid of %s from %d runs", snakemake.wildcards.scheme, len(metrics))
