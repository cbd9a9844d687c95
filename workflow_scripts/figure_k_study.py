"""Rule figure_k_study: ESI Fig. S1 (accuracy vs K) and S2 (fit time vs K)."""
import json

from cntem.plots import k_study

runs = [{"k": k, "classifier": c, "metrics": json.load(open(p))}
        for (k, c), p in zip(snakemake.params.runs, snakemake.input.metrics)]
k_study(runs, snakemake.output.accuracy, snakemake.output.time, snakemake.wildcards.scheme)
