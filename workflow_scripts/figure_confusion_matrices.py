"""Rule figure_confusion_matrices: the paper's Fig. 11 (and the LS baseline beside it)."""
import json

from cntem import rule_log
from cntem.plots import METHOD_TITLES, confusion_matrices

log = rule_log(snakemake.log[0])
panels = {}
for (balance, method), path in zip(snakemake.params.panels, snakemake.input.metrics):
    if balance == snakemake.params.balance:
        with open(path) as fh:
            panels[METHOD_TITLES[method]] = json.load(fh)
confusion_matrices(dict(sorted(panels.items(), reverse=True)), snakemake.output[0], snakemake.wildcards.scheme)
log.info("confusion matrices of %s (%s): %s", snakemake.wildcards.scheme, snakemake.params.balance, ", ".join(panels))
