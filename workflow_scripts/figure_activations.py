"""Rule figure_activations: the paper's Fig. 7, tapped-layer activations of one image per class."""
import torch

from cntem import rule_log
from cntem.backbone import load_weights
from cntem.config import make_extraction
from cntem.hypercolumns import HypercolumnNet, layer_activations
from cntem.io import read_table
from cntem.plots import activation_maps, pick_examples

log = rule_log(snakemake.log[0])
settings = make_extraction(snakemake.params.extraction)
weights = load_weights(snakemake.params.weights, snakemake.config["weights_cache"])
net = HypercolumnNet(weights, settings.taps, torch.device("cpu"))
examples = pick_examples(read_table(snakemake.input.images), 1, snakemake.params.seed)
rows = [(cls, *layer_activations(picked[0]["path"], net, weights, settings))
        for cls, picked in sorted(examples.items())]
activation_maps(rows, list(settings.taps), snakemake.output[0])
log.info("activations of %d classes at taps %s", len(rows), ", ".join(settings.taps))
