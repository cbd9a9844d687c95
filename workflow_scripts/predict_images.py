"""Rule predict: classify the images of config predict.input with the trained model."""
from cntem import log_to
from cntem.backbone import load_weights, resolve_device
from cntem.predict import Bundle, list_images, predict_images, write_predictions

log = log_to(snakemake.log[0])
bundle = Bundle(snakemake.input.model)
weights = load_weights(snakemake.params.weights, snakemake.params.weights_cache)
bundle.check_compatible(weights, snakemake.params.taps)
rows = predict_images(bundle, list_images([snakemake.input.images]), weights,
                      resolve_device(snakemake.params.device), snakemake.params.batch_size, progress=True)
write_predictions(rows, bundle.meta["classes"], snakemake.output.predictions)
log.info("%d images classified", len(rows))
