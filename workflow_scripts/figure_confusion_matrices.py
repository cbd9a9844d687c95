"""Rule figure_confusion_matrices: the paper's Fig. 11 (and the LS baseline beside it)."""
import json

from cntem.plots import METHOD_TITLES, confusion_matrices

balance = snakemake.params.balance
panels = {}
for key, path in snakemake.input.items():
    b, method = key.split("|")
    if b == balance:
        panels[METHOD_TITLES["baseline" if method == "baseline" else "hcol"]] = json.load(open(path))
confusion_matrices(dict(sorted(panels.items(), reverse=True)), snakemake.output[0], snakemake.wildcards.scheme)
