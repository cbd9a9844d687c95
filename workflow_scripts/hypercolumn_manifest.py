"""Rule hypercolumn_manifest: which (image, rotation) entries to extract, and their shards."""
from pathlib import Path

from cntem import rule_log
from cntem.config import make_extraction
from cntem.io import read_table, write_table
from cntem.shards import MANIFEST_COLUMNS, check_disk, shard_bytes, shard_manifest

log = rule_log(snakemake.log[0])
settings = make_extraction(snakemake.params.extraction)
plans = [read_table(p) for p in snakemake.input.plans]
rows = shard_manifest(read_table(snakemake.input.table), plans, snakemake.params.shards, settings)
write_table(snakemake.output.manifest, rows, MANIFEST_COLUMNS)
out_dir = Path(snakemake.output.manifest).parent
existing = sum(p.stat().st_size for p in out_dir.glob("shard-*.h5"))
n_views = sum(r["views"] for r in rows)
needed = shard_bytes(len(rows), n_views, settings)
check_disk(out_dir, max(needed - existing, 0))
log.info("%d entries (%d views of %d px, input mode %s) from %d images in %d shards (hypercolumns.shards: %s), "
         "%.2f MB an entry", len(rows), n_views, settings.image_size, settings.input_mode, len({r["id"] for r in rows}),
         len({r["shard"] for r in rows}), snakemake.params.shards, needed / max(len(rows), 1) / 1e6)
