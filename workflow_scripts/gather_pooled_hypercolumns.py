"""Rule gather_pooled_hypercolumns: one fold's training entries (with rotated copies) and validation images (at a
test-time averaged balance strategy, also their rotated or mirrored copies) as their pooled hypercolumns, read from
the shards."""
from cntem import rule_log
from cntem.encoded import write_encoded
from cntem.folds import fold_entries
from cntem.io import read_table
from cntem.pooled import PooledHypercolumnEncoder
from cntem.shards import HypercolumnStore

log = rule_log(snakemake.log[0])
splits = fold_entries(read_table(snakemake.input.plan), snakemake.wildcards.fold, snakemake.params.rotated)
with HypercolumnStore(snakemake.input.shards) as store:
    encoder = PooledHypercolumnEncoder(store.taps)
    write_encoded(snakemake.output.pooled, encoder, store, splits)
log.info("pooled hypercolumns %s: %s entries, dimension %d", dict(snakemake.wildcards.items()),
         {role: len(rows) for role, rows in splits.items()}, encoder.dim)
