"""Rule extract_hypercolumns: one HDF5 shard of sparse VGG16 hypercolumns."""
from pathlib import Path

import torch

from cntem import rule_log
from cntem.backbone import load_weights, resolve_device
from cntem.config import make_extraction
from cntem.hypercolumns import extract_shard, loader_workers
from cntem.io import read_table
from cntem.shards import check_disk, format_bytes, shard_bytes

log = rule_log(snakemake.log[0])
# Batch size, device and weights cache change only how fast the shard is made, not what it holds:
# they come from the config, not from the rule's params (whose change would re-extract the shard).
runtime = snakemake.config
entries = [r for r in read_table(snakemake.input.manifest) if int(r["shard"]) == int(snakemake.wildcards.shard)]
settings = make_extraction(snakemake.params.extraction, runtime["hypercolumns"]["batch_size"])
device = resolve_device(runtime["device"])
torch.set_num_threads(snakemake.threads)
weights = load_weights(snakemake.params.weights, runtime["weights_cache"])
if weights.is_random:
    log.warning("weights: random - for tests only; every output is stamped weights_random=True")
check_disk(snakemake.output.shard.rsplit("/", 1)[0],
           shard_bytes(len(entries), sum(int(e["views"]) for e in entries), settings))
stats = extract_shard(entries, snakemake.output.shard, weights, settings, device,
                      workers=loader_workers(device, snakemake.threads))
shard = Path(snakemake.output.shard)
store_bytes = sum(p.stat().st_size for p in shard.parent.glob("shard-*.h5"))
log.info("%d entries (%d views) on %s in %.1f s (%.2f images/s); %s an entry; %s now holds %s",
         stats["images"], stats["views"], device, stats["seconds"], stats["images_per_s"],
         format_bytes(shard.stat().st_size / len(entries)), shard.parent, format_bytes(store_bytes))
