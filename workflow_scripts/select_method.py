"""Rule select_method: one outer split of the nested cross-validation. The candidate methods are compared by an
inner grouped cross-validation over the split's training rows only; the one chosen is scored by its outer
predictions of the split's validation fold."""
import json

from cntem import rule_log
from cntem.evaluate import check_leakage, fold_metrics, leakage_record
from cntem.folds import fold_entries
from cntem.io import read_table
from cntem.selection import InnerSelection, training_rows

log = rule_log(snakemake.log[0])
params, split = snakemake.params, int(snakemake.wildcards.fold)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
selection = InnerSelection(params.candidates, params.settings, params.inner_folds, params.seed,
                           snakemake.config["device"], snakemake.threads, params.stack)
selection.fit(training_rows(params.encoded), group_of)  # the outer split's training rows only
val_ids = {r["id"] for r in fold_entries(read_table(snakemake.input.plan), split)["val"]}
leakage = check_leakage([leakage_record(f"{snakemake.wildcards.scheme}/nested/fold{split}", val_ids, group_of,
                                        {"inner selection": selection.used_ids_})])
chosen = params.candidates.index(selection.best_)
with open(snakemake.input.fits[chosen]) as fh:
    classes = json.load(fh)["classes"]
outer = fold_metrics(read_table(snakemake.input.predictions[chosen]), classes)
result = {"scheme": snakemake.wildcards.scheme, "split": split, **selection.describe(),
          "outer": {"accuracy": outer["accuracy"], "macro_f1": outer["macro_f1"], "n_val": len(val_ids)},
          "leakage_check": leakage}
with open(snakemake.output[0], "w") as fh:
    json.dump(result, fh, indent=1)
for name, score in selection.scores_.items():
    log.info("%s: inner accuracy %.3f (macro-F1 %.3f)", name, score["accuracy_mean"], score["macro_f1_mean"])
log.info("split %d: chose %s, outer validation accuracy %.3f; %s", split, selection.best_, outer["accuracy"],
         leakage[0])
