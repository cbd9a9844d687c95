"""Rule train_model: dictionary + classifier on every labelled image -> a self-describing bundle."""
from collections import defaultdict

import faiss
import torch

from cntem import log_to
from cntem.backbone import load_weights, resolve_device
from cntem.classify import fit
from cntem.dictionary import build_dictionary
from cntem.folds import balanced_training_set
from cntem.hypercolumns import ExtractionSettings
from cntem.shards import HypercolumnStore
from cntem.io import read_table
from cntem.predict import save_bundle
from cntem.schemes import scheme_classes
from cntem.vlad import encode

log = log_to(snakemake.log[0])
cfg = snakemake.params.config
device = resolve_device(cfg["device"])
faiss.omp_set_num_threads(snakemake.threads)
torch.set_num_threads(snakemake.threads)
images = read_table(snakemake.input.images)
group_of = {r["id"]: r["group"] for r in images}
by_class = defaultdict(list)
for r in images:
    by_class[r["class"]].append(r["id"])
entries = balanced_training_set(by_class, snakemake.params.balance, cfg["balance"]["per_class"], cfg["balance"]["seed"])
with HypercolumnStore(snakemake.input.shards) as store:
    available = [e for e in entries if (e[0], e[1]) in store.index]
    if len(available) < len(entries):
        log.warning("%d rotated copies were not extracted and are left out", len(entries) - len(available))
    pairs = [(i, rot) for i, rot, _ in available]
    dictionary = build_dictionary(store, pairs, snakemake.params.k, cfg["dictionary"], cfg["vlad"], cfg["device"],
                                  progress=True)
    x = encode(store, pairs, dictionary, device, cfg["vlad"]["power_norm"], progress=True)
classes = scheme_classes({c: c for c in by_class})
y = [cls for _, _, cls in available]
classifier = fit(snakemake.params.classifier, x, y, [group_of[i] for i, _ in pairs], classes,
                 cfg[snakemake.params.classifier], str(device), snakemake.threads)
weights = load_weights(cfg["weights"], cfg["weights_cache"])
settings = ExtractionSettings.from_config(cfg["hypercolumns"])
save_bundle(snakemake.output.model.rsplit("/", 1)[0], dictionary, classifier, weights, settings,
            cfg["vlad"]["power_norm"], cfg, len(images))
log.info("model: %s at K=%d on %d entries of %d images, %d classes", snakemake.params.classifier,
         dictionary.k, len(pairs), len(images), len(classes))
