"""Rule late_fusion: one fold of a late fusion, its members' class probabilities of the validation images combined
(their mean, or a combiner stacked on their out-of-fold probabilities of the training rows only); the combiner is
kept for rule late_fusion_averaged."""
import json

import joblib

from cntem import rule_log
from cntem.config import make_classifier
from cntem.encoded import load_encoded
from cntem.evaluate import write_fold_outputs
from cntem.fusion import late_fused_fold
from cntem.io import read_table
from cntem.runs import Method

log = rule_log(snakemake.log[0])
method = Method.of_fold_job(snakemake.wildcards.representation, snakemake.wildcards.estimator)
params, fold = snakemake.params, snakemake.wildcards.fold
fits = []
for path in snakemake.input.fits:
    with open(path) as fh:
        fits.append(json.load(fh))
stacking = None
if method.combiner == "stack":
    classes = fits[0]["classes"]
    stacking = {"train": [load_encoded(p, ("train",))[0]["train"] for p in snakemake.input.encoded],
                "make": [lambda m=m: make_classifier(m.classifier, params.settings[m.classifier], classes,
                                                     snakemake.config["device"], snakemake.threads)
                         for m in method.members],
                "group_of": {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}, **params.stack}
rows, info, combiner = late_fused_fold(method, fits, [read_table(p) for p in snakemake.input.predictions], fold,
                                       stacking)
write_fold_outputs(rows, info, info["classes"], snakemake.output.predictions, snakemake.output.fit)
joblib.dump(combiner, snakemake.output.combiner)
log.info("%s fold %s: accuracy %.3f (members %s), fit %.1f s", method.name, fold, info["accuracy"],
         ", ".join(info["members"]), info["fit_seconds"])
