"""Rule hypercolumn_manifest: which (image, rotation) entries to extract, and their shards."""
from pathlib import Path

from cntem import rule_log
from cntem.config import make_extraction
from cntem.io import read_table, write_table
from cntem.shards import MANIFEST_COLUMNS, check_disk, shard_bytes, shard_manifest

log = rule_log(snakemake.log[0])
rows = shard_manifest(read_table(snakemake.input.table), [read_table(p) for p in snakemake.input.plans],
                      snakemake.params.shards)
write_table(snakemake.output.manifest, rows, MANIFEST_COLUMNS)
out_dir = Path(snakemake.output.manifest).parent
existing = sum(p.stat().st_size for p in out_dir.glob("shard-*.h5"))
entry_bytes = shard_bytes(1, make_extraction(snakemake.params.extraction))
check_disk(out_dir, max(len(rows) * entry_bytes - existing, 0))
log.info("%d entries from %d images in %d shards (hypercolumns.shards: %s), %.2f MB an entry", len(rows),
         len({r["id"] for r in rows}), len({r["shard"] for r in rows}), snakemake.params.shards, entry_bytes / 1e6)
