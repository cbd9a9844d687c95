"""Rule evaluate: one run's metrics over its folds, and its leakage check (fails the job on leakage)."""
import json

from cntem import rule_log
from cntem.dictionary import VisualDictionary
from cntem.evaluate import check_leakage, fit_ids_by_split, run_leakage_records, summarize
from cntem.io import read_table

log = rule_log(snakemake.log[0])
run = dict(snakemake.wildcards.items())
predictions = [read_table(p) for p in snakemake.input.predictions]
fits = []
for path in snakemake.input.fits:
    with open(path) as fh:
        fits.append(json.load(fh))
dictionary_fit_ids = fit_ids_by_split([VisualDictionary.load(p).fit_ids_ for p in snakemake.input.dictionaries],
                                      len(fits))
records = run_leakage_records("/".join(run.values()), read_table(snakemake.input.plan), read_table(snakemake.input.folds),
                              fits, dictionary_fit_ids)
with open(snakemake.output.leakage, "w") as fh:
    fh.writelines(f"{line}\n" for line in check_leakage(records))
metrics = summarize(predictions, fits, fits[0]["classes"], snakemake.params.repeats)
with open(snakemake.output.metrics, "w") as fh:
    json.dump({**run, "extraction": snakemake.params.extraction, **metrics}, fh, indent=1, default=float)
log.info("%s: accuracy %.3f +- %.3f over %d folds x %d repeats (std across repeats %.3f); no leakage", run,
         metrics["accuracy"]["mean"], metrics["accuracy"]["std"], metrics["n_folds"], metrics["n_repeats"],
         metrics["accuracy"]["repeat_std"])
