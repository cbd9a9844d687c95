"""Rule evaluate: mean +- std over folds of one run's metrics."""
import json

from cntem import rule_log
from cntem.evaluate import summarize
from cntem.io import read_table

log = rule_log(snakemake.log[0])
predictions = [read_table(p) for p in snakemake.input.predictions]
fits = []
for path in snakemake.input.fits:
    with open(path) as fh:
        fits.append(json.load(fh))
metrics = summarize(predictions, fits, fits[0]["classes"])
with open(snakemake.output.metrics, "w") as fh:
    json.dump({**dict(snakemake.wildcards.items()), **metrics}, fh, indent=1, default=float)
log.info("%s: accuracy %.3f +- %.3f over %d folds", dict(snakemake.wildcards.items()),
         metrics["accuracy"]["mean"], metrics["accuracy"]["std"], metrics["n_folds"])
