"""Rule folds: stratified, group-aware cross-validation folds, one assignment per repeat."""
from collections import Counter

from cntem import rule_log
from cntem.folds import assign_folds, fold_columns, fold_table_columns
from cntem.io import read_table, write_table

log = rule_log(snakemake.log[0])
cv = snakemake.params.cv
rows = assign_folds(read_table(snakemake.input.table), cv["folds"], cv["seed"], cv["repeats"])
write_table(snakemake.output.folds, rows, fold_table_columns(cv["repeats"]))
for repeat, column in enumerate(fold_columns(cv["repeats"])):
    for (fold, cls), count in sorted(Counter((r[column], r["class"]) for r in rows).items()):
        log.info("repeat %d fold %d class %s: %d images", repeat, fold, cls, count)
