"""Rule figure_tsne: the paper's Fig. 10, validation VLADs of every fold, one panel per balance strategy."""
import numpy as np

from cntem import rule_log
from cntem.encoded import load_encoded
from cntem.plots import BALANCE_TITLES, tsne

log = rule_log(snakemake.log[0])
panels = {}
for balance in snakemake.params.strategies:
    xs, ys = [], []
    for path in snakemake.input[balance]:
        splits, _ = load_encoded(path)
        xs.append(splits["val"]["X"])
        ys += splits["val"]["y"]
    panels[BALANCE_TITLES.get(balance, balance)] = (np.concatenate(xs), ys)
tsne(panels, snakemake.output[0], snakemake.wildcards.scheme, snakemake.params.perplexity, snakemake.params.seed)
log.info("t-SNE of %s: %s", snakemake.wildcards.scheme, {k: len(v[1]) for k, v in panels.items()})
