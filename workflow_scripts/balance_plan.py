"""Rule balance_plan: what each fold trains (with rotated copies) and validates on."""
from collections import Counter

from cntem import log_to
from cntem.folds import PLAN_COLUMNS, balance_plan
from cntem.io import read_table, write_table

log = log_to(snakemake.log[0])
balance = snakemake.params.balance
plan = balance_plan(read_table(snakemake.input.folds), snakemake.wildcards.balance,
                    balance["per_class"], balance["seed"])
write_table(snakemake.output.plan, plan, PLAN_COLUMNS)
for key, count in sorted(Counter((r["fold"], r["role"], r["class"]) for r in plan).items()):
    log.info("fold %d %s %s: %d entries", *key, count)
