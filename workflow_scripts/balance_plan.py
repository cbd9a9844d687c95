"""Rule balance_plan: what each fold trains (with rotated copies) and validates on (with test-time averaging, also the
validation images' copies in the group's other orientations), and the final model's set."""
from collections import Counter

from cntem import rule_log
from cntem.folds import PLAN_COLUMNS, balance_plan, model_training_set, rotated_validation
from cntem.io import read_table, write_table

log = rule_log(snakemake.log[0])
folds = read_table(snakemake.input.folds)
params, strategy = snakemake.params, snakemake.wildcards.balance
plan = balance_plan(folds, strategy, params.per_class, params.seed)
if params.averaging_group:
    plan += rotated_validation(plan, params.averaging_group)
write_table(snakemake.output.plan, plan, PLAN_COLUMNS)
write_table(snakemake.output.model_plan, model_training_set(folds, strategy, params.per_class, params.seed),
            PLAN_COLUMNS)
for key, count in sorted(Counter((r["fold"], r["role"], r["class"]) for r in plan).items()):
    log.info("fold %d %s %s: %d entries", *key, count)
