"""Rule figure_confusion_matrices: the paper's Fig. 11 (and the LS baseline beside it), at the main balance
strategy."""
import json

from cntem import rule_log
from cntem.plots import confusion_matrices

log = rule_log(snakemake.log[0])
runs = []
for path in snakemake.input.metrics:
    with open(path) as fh:
        runs.append(json.load(fh))
confusion_matrices(runs, snakemake.output[0], snakemake.wildcards.scheme)
log.info("confusion matrices of %s: %s", snakemake.wildcards.scheme, ", ".join(f"{r['balance']}/{r['method']}"
                                                                            for r in runs))
