"""Rule encode_vlad: VLAD vectors of one fold's training entries (with rotated copies) and validation images (at a
test-time averaged balance strategy, also their rotated or mirrored copies)."""
import time

import torch

from cntem import rule_log
from cntem.backbone import resolve_device
from cntem.dictionary import VisualDictionary
from cntem.encoded import write_encoded
from cntem.folds import fold_entries
from cntem.io import read_table
from cntem.shards import HypercolumnStore
from cntem.vlad import VladEncoder

log = rule_log(snakemake.log[0])
device = resolve_device(snakemake.config["device"])
torch.set_num_threads(snakemake.threads)
encoder = VladEncoder(VisualDictionary.load(snakemake.input.dictionary), snakemake.params.power_norm, device)
splits = fold_entries(read_table(snakemake.input.plan), snakemake.wildcards.fold, snakemake.params.rotated)
start = time.perf_counter()
with HypercolumnStore(snakemake.input.shards) as store:
    write_encoded(snakemake.output.vlad, encoder, store, splits, progress=True)
log.info("VLAD %s: %s entries, dimension %d, %.1f s on %s", dict(snakemake.wildcards.items()),
         {role: len(rows) for role, rows in splits.items()}, encoder.dim, time.perf_counter() - start, device)
