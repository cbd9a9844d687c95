"""Rule predict: classify the images of config predict.input with the trained model bundle: calibrated
probabilities, prediction sets, review flags, class shares with intervals, figures and the sample's page.

Unreadable files are skipped and listed (predictions_unreadable.csv and this rule's log); the job
fails only when no image at all could be classified (then the log alone lists them).
"""
from cntem import rule_log
from cntem.backbone import load_weights, resolve_device
from cntem.model import Model
from cntem.predict import list_images, predict_images, require_a_classified_image, write_predictions

log = rule_log(snakemake.log[0])
runtime = snakemake.config  # device, batch size, weights cache: how fast, not what is predicted
output = snakemake.output
model = Model.load(snakemake.input.model)
weights = load_weights(snakemake.params.weights, runtime["weights_cache"])
model.check_compatible(weights, snakemake.params.taps, snakemake.params.input_mode)
rows, unreadable = predict_images(model, list_images([snakemake.input.images]), weights,
                                  resolve_device(runtime["device"]), runtime["hypercolumns"]["batch_size"],
                                  progress=True, averaging=snakemake.params.averaging)
write_predictions(rows, unreadable, model, dict(output.items()), title=snakemake.params.title,
                  gallery_size=snakemake.params.gallery_size)
# A failed job's outputs are deleted by Snakemake: with nothing classified, the reasons are in this log only.
require_a_classified_image(rows, unreadable, snakemake.log[0])
log.info("%d images classified, %d flagged for review, %d unreadable (listed in %s)", len(rows),
         sum(r["review"] == "yes" for r in rows), len(unreadable), output.unreadable)
