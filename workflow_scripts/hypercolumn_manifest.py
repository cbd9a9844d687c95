"""Rule hypercolumn_manifest: which (image, rotation) entries to extract, and their shards.

A class that any plan augments gets all three rotations of every image extracted, so the
manifest (and every shard's content) depends on class membership, not on fold assignment:
adding images re-extracts only the shards those images fall into.
"""
from pathlib import Path

from cntem import rule_log
from cntem.hypercolumns import ExtractionSettings
from cntem.shards import assign_shard, check_disk, shard_bytes
from cntem.io import read_table, write_table

log = rule_log(snakemake.log[0])
settings = ExtractionSettings.from_config(snakemake.params.extraction)
n_shards = snakemake.params.shards
paths = {r["id"]: r["path"] for r in read_table(snakemake.input.table)}

rotations = {}
for plan_path in snakemake.input.plans:
    plan = read_table(plan_path)
    augmented = {r["class"] for r in plan if r["rotation"] != "0"}
    for r in plan:
        rots = rotations.setdefault(r["id"], {0})
        if r["class"] in augmented:
            rots.update((90, 180, 270))

rows = [{"id": i, "rotation": rot, "path": paths[i], "shard": assign_shard(i, n_shards)}
        for i in sorted(rotations) for rot in sorted(rotations[i])]
write_table(snakemake.output.manifest, rows, ["id", "rotation", "path", "shard"])
out_dir = Path(snakemake.output.manifest).parent
existing = sum(p.stat().st_size for p in out_dir.glob("shard-*.h5"))
check_disk(out_dir, max(shard_bytes(len(rows), settings) - existing, 0))
log.info("%d entries from %d images in %d shards", len(rows), len(rotations), len({r["shard"] for r in rows}))
