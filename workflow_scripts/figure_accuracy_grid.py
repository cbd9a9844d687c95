"""Rule figure_accuracy_grid: the paper's Fig. 8 (4 classes) / Fig. 9 (8 classes)."""
import json

from cntem.plots import accuracy_grid

metrics = {}
for key, path in snakemake.input.items():
    balance, method = key.split("|")
    metrics[(balance, "baseline" if method == "baseline" else "hcol")] = json.load(open(path))
accuracy_grid(metrics, snakemake.output[0], snakemake.wildcards.scheme)
