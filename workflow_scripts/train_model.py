"""Rule train_model: encoder + classifier on every labelled image (balanced like the training folds)."""
import faiss
import torch

from cntem import rule_log
from cntem.backbone import resolve_device
from cntem.config import make_classifier, make_dictionary
from cntem.folds import entry_keys
from cntem.io import read_table
from cntem.schemes import ordered_classes
from cntem.model import Model
from cntem.shards import HypercolumnStore
from cntem.vlad import VladEncoder

log = rule_log(snakemake.log[0])
params, device_spec = snakemake.params, snakemake.config["device"]
faiss.omp_set_num_threads(snakemake.threads)
torch.set_num_threads(snakemake.threads)
plan = read_table(snakemake.input.plan)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
labels = [r["class"] for r in plan]
encoder = VladEncoder(make_dictionary(params.k, params.dictionary, params.pca, device_spec), params.power_norm,
                      resolve_device(device_spec))
model = Model(encoder, make_classifier(params.classifier, params.classifier_settings, ordered_classes(labels),
                                       device_spec, snakemake.threads))
with HypercolumnStore(snakemake.input.shards) as store:
    model.fit(store, entry_keys(plan), labels, [group_of[r["id"]] for r in plan], progress=True)
model.save(snakemake.output.model, settings=dict(params.items()))
log.info("model: %s at K=%d on %d entries of %d images, classes %s", params.classifier, params.k, len(plan),
         len(group_of), ", ".join(model.classes))
