"""Rule encode_vlad: VLAD vectors of one fold's training entries (with rotated copies) and validation images."""
import time

import torch

from cntem import rule_log
from cntem.backbone import resolve_device
from cntem.dictionary import Dictionary
from cntem.folds import fold_entries
from cntem.io import read_table
from cntem.shards import HypercolumnStore
from cntem.vlad import encode, save_vlad

log = rule_log(snakemake.log[0])
device = resolve_device(snakemake.config["device"])
torch.set_num_threads(snakemake.threads)
power_norm = snakemake.params.power_norm
dictionary = Dictionary.load(snakemake.input.dictionary)
splits = fold_entries(read_table(snakemake.input.plan), snakemake.wildcards.fold)
start = time.perf_counter()
encoded = {}
with HypercolumnStore(snakemake.input.shards) as store:
    for name, rows in splits.items():
        entries = [(r["id"], r["rotation"]) for r in rows]
        encoded[name] = {"X": encode(store, entries, dictionary, device, power_norm, progress=True),
                         "ids": [r["id"] for r in rows], "rotations": [r["rotation"] for r in rows],
                         "y": [r["class"] for r in rows]}
save_vlad(snakemake.output.vlad, encoded, {"k": dictionary.k, "power_norm": power_norm,
                                           "dictionary_fit_ids": ",".join(dictionary.meta["fit_ids"])})
log.info("VLAD %s: %d train + %d val entries, dimension %d, %.1f s on %s", snakemake.wildcards,
         len(splits["train"]), len(splits["val"]), encoded["train"]["X"].shape[1], time.perf_counter() - start, device)
