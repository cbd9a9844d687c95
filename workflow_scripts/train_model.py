"""Rule train_model: dictionary + classifier on every labelled image -> a self-describing bundle."""
from collections import defaultdict

import faiss
import torch

from cntem import rule_log
from cntem.backbone import load_weights, resolve_device
from cntem.classify import fit
from cntem.dictionary import build_dictionary
from cntem.folds import balanced_training_set
from cntem.hypercolumns import ExtractionSettings
from cntem.io import read_table
from cntem.predict import save_bundle
from cntem.schemes import scheme_classes
from cntem.shards import HypercolumnStore
from cntem.vlad import encode

log = rule_log(snakemake.log[0])
params = snakemake.params
device_spec = snakemake.config["device"]
device = resolve_device(device_spec)
faiss.omp_set_num_threads(snakemake.threads)
torch.set_num_threads(snakemake.threads)
images = read_table(snakemake.input.images)
group_of = {r["id"]: r["group"] for r in images}
by_class = defaultdict(list)
for r in images:
    by_class[r["class"]].append(r["id"])
entries = balanced_training_set(by_class, params.balance, params.per_class, params.balance_seed)
with HypercolumnStore(snakemake.input.shards) as store:
    available = [e for e in entries if (e[0], e[1]) in store.index]
    if len(available) < len(entries):
        log.warning("%d rotated copies were not extracted and are left out", len(entries) - len(available))
    pairs = [(i, rot) for i, rot, _ in available]
    dictionary = build_dictionary(store, pairs, params.k, params.dictionary, params.pca, device_spec, progress=True)
    x = encode(store, pairs, dictionary, device, params.power_norm, progress=True)
classes = scheme_classes({c: c for c in by_class})
y = [cls for _, _, cls in available]
classifier = fit(params.classifier, x, y, [group_of[i] for i, _ in pairs], classes, params.classifier_settings,
                 str(device), snakemake.threads)
weights = load_weights(params.weights, snakemake.config["weights_cache"])
settings = ExtractionSettings.from_config(params.extraction)
save_bundle(snakemake.output.model.rsplit("/", 1)[0], dictionary, classifier, weights, settings,
            params.power_norm, dict(params.items()), len(images))
log.info("model: %s at K=%d on %d entries of %d images, %d classes", params.classifier,
         dictionary.k, len(pairs), len(images), len(classes))
