"""Rule figure_tsne: the paper's Fig. 10, validation VLADs of every fold, one panel per balance strategy."""
import numpy as np

from cntem.plots import BALANCE_TITLES, tsne
from cntem.vlad import load_vlad

panels = {}
for balance in snakemake.params.strategies:
    xs, ys = [], []
    for path in snakemake.input.vlads:
        if f"/{balance}/" in path:
            splits, _ = load_vlad(path)
            xs.append(splits["val"]["X"])
            ys += splits["val"]["y"]
    panels[BALANCE_TITLES.get(balance, balance)] = (np.concatenate(xs), ys)
tsne(panels, snakemake.output[0], snakemake.wildcards.scheme, snakemake.params.perplexity, snakemake.params.seed)
