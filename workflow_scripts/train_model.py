"""Rule train_model: encoder (VLAD or pooled hypercolumns) + classifier on every labelled image (balanced like
the training folds)."""
import faiss
import torch

from cntem import rule_log
from cntem.config import make_classifier, make_encoder
from cntem.folds import entry_keys
from cntem.io import read_table
from cntem.schemes import ordered_classes
from cntem.model import Model
from cntem.shards import HypercolumnStore

log = rule_log(snakemake.log[0])
params, device_spec = snakemake.params, snakemake.config["device"]
faiss.omp_set_num_threads(snakemake.threads)
torch.set_num_threads(snakemake.threads)
plan = read_table(snakemake.input.plan)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
labels = [r["class"] for r in plan]
classifier = make_classifier(params.classifier, params.classifier_settings, ordered_classes(labels), device_spec,
                             snakemake.threads)
with HypercolumnStore(snakemake.input.shards) as store:
    model = Model(make_encoder(params.representation, store.taps, device_spec), classifier)
    model.fit(store, entry_keys(plan), labels, [group_of[r["id"]] for r in plan], progress=True)
model.save(snakemake.output.model, settings=dict(params.items()))
log.info("model: %s on %s, %d entries of %d images, classes %s", params.classifier, model.encoder.describe(),
         len(plan), len(group_of), ", ".join(model.classes))
