"""Rule train_model: encoder (VLAD or pooled hypercolumns) + classifier on every labelled image (balanced like
the training folds), or a fused model (one encoder per representation, in their input modes): the configured method,
or with model.method auto the selection's winner."""
import json
from contextlib import ExitStack

import faiss
import torch

from cntem import rule_log
from cntem.config import make_classifier, make_encoder
from cntem.folds import entry_keys
from cntem.fused_model import build_fused_model
from cntem.io import read_table
from cntem.model import Model
from cntem.runs import Method
from cntem.schemes import ordered_classes
from cntem.shards import HypercolumnStore

log = rule_log(snakemake.log[0])
device_spec = snakemake.config["device"]
settings = dict(snakemake.params.items())  # recorded in model.json
if settings["method"] == "auto":
    with open(snakemake.input.selection[0]) as fh:
        selection = json.load(fh)[snakemake.wildcards.scheme]
    winner = selection["plain"]["winner"]
    settings = {"method": winner, **settings["candidates"][winner], "selection": selection}
    log.info("model.method auto: %s (plain CV accuracy %.3f; nested estimate %.3f +- %.3f)", winner,
             selection["plain"]["scores"][winner]["accuracy"], selection["nested"]["accuracy"]["mean"],
             selection["nested"]["accuracy"]["std"])
method = Method.parse(settings["method"])
faiss.omp_set_num_threads(snakemake.threads)
torch.set_num_threads(snakemake.threads)
plan = read_table(snakemake.input.plan)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
labels = [r["class"] for r in plan]
groups = [group_of[r["id"]] for r in plan]
if method.is_fused:  # one encoder per single representation, each on its input mode's shards
    with ExitStack() as stack:
        stores = {mode: stack.enter_context(HypercolumnStore(snakemake.input[f"shards_{mode}"]))
                  for mode in method.representation.input_modes}
        model, make_member = build_fused_model(method, settings, next(iter(stores.values())).taps,
                                               ordered_classes(labels), device_spec, snakemake.threads)
        model.fit(stores, entry_keys(plan), labels, groups, make_member, settings["stack"], progress=True)
    described = ", ".join(str(part.encoder.describe()) for part in model.parts)
else:
    classifier = make_classifier(method.classifier, settings["classifier_settings"], ordered_classes(labels),
                                 device_spec, snakemake.threads)
    with HypercolumnStore(snakemake.input[f"shards_{method.representation.input_mode}"]) as store:
        encoder = make_encoder(method.representation, settings["representation_settings"], store.taps, device_spec)
        model = Model(encoder, classifier)
        model.fit(store, entry_keys(plan), labels, groups, progress=True)
    described = str(model.encoder.describe())
model.save(snakemake.output.model, settings=settings)
log.info("model %s: %s, %d entries of %d images, classes %s", method.name, described, len(plan), len(group_of),
         ", ".join(model.classes))
