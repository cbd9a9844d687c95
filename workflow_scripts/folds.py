"""Rule folds: stratified, group-aware cross-validation folds."""
from collections import Counter

from cntem import rule_log
from cntem.folds import FOLD_COLUMNS, assign_folds
from cntem.io import read_table, write_table

log = rule_log(snakemake.log[0])
cv = snakemake.params.cv
rows = assign_folds(read_table(snakemake.input.table), cv["folds"], cv["seed"])
write_table(snakemake.output.folds, rows, FOLD_COLUMNS)
for fold, count in sorted(Counter((r["fold"], r["class"]) for r in rows).items()):
    log.info("fold %d class %s: %d images", fold[0], fold[1], count)
