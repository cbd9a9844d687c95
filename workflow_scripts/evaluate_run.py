"""Rule evaluate: mean +- std over folds of one run's metrics."""
import json

from cntem.evaluate import summarize
from cntem.io import read_table

predictions = [read_table(p) for p in snakemake.input.predictions]
fits = [json.load(open(p)) for p in snakemake.input.fits]
metrics = summarize(predictions, fits, fits[0]["classes"])
with open(snakemake.output.metrics, "w") as fh:
    json.dump({**dict(snakemake.wildcards.items()), **metrics}, fh, indent=1, default=float)
