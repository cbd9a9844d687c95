"""Rule late_fusion_averaged: one fold of a late fusion's averaged method, its combiner (fitted by rule late_fusion, not
refitted) applied to its members' test-time averaged probabilities."""
import json

import joblib

from cntem import rule_log
from cntem.evaluate import write_fold_predictions
from cntem.fusion import combined_rows
from cntem.io import read_table

log = rule_log(snakemake.log[0])
with open(snakemake.input.fit) as fh:
    classes = json.load(fh)["classes"]
rows = combined_rows(joblib.load(snakemake.input.combiner), [read_table(p) for p in snakemake.input.averaged],
                     classes, snakemake.wildcards.fold)
write_fold_predictions(rows, classes, snakemake.output.averaged)
log.info("%s: %d averaged validation images combined", dict(snakemake.wildcards.items()), len(rows))
