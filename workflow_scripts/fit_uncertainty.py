"""Rule fit_uncertainty: calibration, conformal sets and share estimators of the deployed run's out-of-fold
predictions, validated on its held-out folds; uncertainty.json joins the model bundle."""
import hashlib
import json

from cntem import rule_log
from cntem.io import read_table
from cntem.uncertainty import UncertaintySettings, fit_and_validate, read_out_of_fold, write_validation

log = rule_log(snakemake.log[0])
model_text = open(snakemake.input.model).read()
model = json.loads(model_text)
candidates, per_run = snakemake.params.candidates, len(snakemake.input.predictions) // len(snakemake.params.candidates)
method = model["settings"]["method"]  # the deployed one: with model.method auto, the selection's winner
start = candidates.index(method) * per_run
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
oof = read_out_of_fold(snakemake.input.predictions[start:start + per_run], model["classes"], group_of)
fitted, validation = fit_and_validate(oof, model["classes"], UncertaintySettings(**snakemake.params.settings),
                                      {"scheme": snakemake.wildcards.scheme, "balance": snakemake.params.balance,
                                       "method": method,
                                       "model_sha256": hashlib.sha256(model_text.encode()).hexdigest()})
write_validation(fitted, validation, oof, dict(snakemake.output.items()))
v = fitted.validation_
log.info("%s: %d micrographs; ECE %.3f -> %.3f (T = %.2f); set coverage %.3f (nominal %.2f); default share "
         "estimator %s", method, v["micrographs"], v["calibration"]["ece_before"],
         v["calibration"]["ece_after"], v["calibration"]["temperature"], v["coverage"][0]["coverage"],
         fitted.settings.coverage, fitted.default_estimator)
