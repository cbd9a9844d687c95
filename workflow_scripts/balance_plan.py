"""Rule balance_plan: what each fold trains (with rotated copies) and validates on."""
from collections import Counter

from cntem import rule_log
from cntem.folds import PLAN_COLUMNS, balance_plan
from cntem.io import read_table, write_table

log = rule_log(snakemake.log[0])
plan = balance_plan(read_table(snakemake.input.folds), snakemake.wildcards.balance,
                    snakemake.params.per_class, snakemake.params.seed)
write_table(snakemake.output.plan, plan, PLAN_COLUMNS)
for key, count in sorted(Counter((r["fold"], r["role"], r["class"]) for r in plan).items()):
    log.info("fold %d %s %s: %d entries", *key, count)
