"""Rule hypercolumn_manifest: which (image, orientation) entries to extract, and their shards (append-only: the
shards already extracted keep their entries)."""
from pathlib import Path

from cntem import rule_log
from cntem.config import make_extraction
from cntem.io import read_table, write_table
from cntem.shards import MANIFEST_COLUMNS, StoreContents, check_disk, format_bytes, shard_bytes, shard_manifest

log = rule_log(snakemake.log[0])
settings = make_extraction(snakemake.params.extraction)
plans = [read_table(p) for p in snakemake.input.plans]
out_dir = Path(snakemake.output.manifest).parent
extracted = StoreContents.read(out_dir)
rows = shard_manifest(read_table(snakemake.input.table), plans, snakemake.params.shards, settings, extracted)
write_table(snakemake.output.manifest, rows, MANIFEST_COLUMNS)
new = [r for r in rows if r["shard"] not in extracted.held]
n_views = sum(r["views"] for r in rows)
check_disk(out_dir, shard_bytes(len(new), sum(r["views"] for r in new), settings))
log.info("%d entries (%d views of %d px, input mode %s) from %d images in %d shards (hypercolumns.shards: %s); "
         "%d of them already extracted, %d to extract in %d new shards", len(rows), n_views, settings.image_size,
         settings.input_mode, len({r["id"] for r in rows}), len({r["shard"] for r in rows}),
         snakemake.params.shards, len(rows) - len(new), len(new), len({r["shard"] for r in new}))
unused = extracted.unused(rows)
if unused:
    paths = [str(out_dir / f"shard-{s:03d}.h5") for s in sorted(unused)]
    log.info("%d extracted entries are not used (removed images, rotations no plan needs now, replaced images' "
             "old content): about %s in %d shards. They cost no time; to reclaim the space, delete those "
             "shards and rerun, which extracts their used entries again: rm %s", sum(unused.values()),
             format_bytes(extracted.unused_bytes(unused)), len(paths), " ".join(paths))
