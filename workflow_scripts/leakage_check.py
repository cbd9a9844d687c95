"""Rule leakage_check: fail if any validation image helped fit a dictionary, PCA or classifier of its fold."""
import json

from cntem import rule_log
from cntem.dictionary import Dictionary
from cntem.evaluate import check_leakage
from cntem.io import read_table

log = rule_log(snakemake.log[0])
groups = {}
for path in snakemake.input.folds:
    scheme = path.split("/")[-2]
    groups[scheme] = {r["id"]: r["group"] for r in read_table(path)}
plans = {tuple(p.split("/")[-3:-1]): read_table(p) for p in snakemake.input.plans}

records = []
for scheme, balance, method, classifier in snakemake.params.runs:
    for fold in snakemake.params.folds:
        run = f"results/{scheme}/{balance}/{method}/fold{fold}"
        val_ids = {r["id"] for r in plans[(scheme, balance)] if r["role"] == "val" and int(r["fold"]) == fold}
        with open(f"{run}/{classifier}/fit.json") as fh:
            fit = json.load(fh)
        fitted = {f"{classifier} classifier": fit["train_ids"],
                  f"{classifier} early stopping": fit.get("early_stopping_groups", [])}
        if method != "baseline":  # the dictionary (and PCA, fitted on the same sample)
            fitted["dictionary/PCA"] = Dictionary.load(f"{run}/dictionary.h5").meta["fit_ids"]
        records.append({"name": f"{run}/{classifier}", "val_ids": val_ids,
                        "val_groups": {groups[scheme][i] for i in val_ids}, "fitted": fitted})
lines = check_leakage(records)
with open(snakemake.output[0], "w") as fh:
    fh.write(f"no leakage in {len(records)} (run, fold) pairs\n" + "\n".join(lines) + "\n")
log.info("no leakage in %d (run, fold) pairs", len(records))
