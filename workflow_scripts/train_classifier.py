"""Rule train_classifier: fit one classifier on a fold's training entries in one representation (VLAD or pooled
hypercolumns, or several side by side, standardised per block: early fusion), predict its validation images; as rule
train_classifier_tta, also their copies in the averaging group's other orientations, and write the averaged
predictions."""
from cntem import rule_log
from cntem.config import make_classifier
from cntem.evaluate import fit_and_predict_fold, group_averaged_rows, write_fold_outputs, write_fold_predictions
from cntem.folds import VAL_ROTATED
from cntem.fusion import for_blocks, load_encoded_parts
from cntem.io import read_table
from cntem.schemes import ordered_classes

log = rule_log(snakemake.log[0])
splits, blocks = load_encoded_parts(snakemake.input.encoded)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
classes = ordered_classes(splits["train"]["y"] + splits["val"]["y"])
classifier = for_blocks(make_classifier(snakemake.wildcards.classifier, snakemake.params.settings, classes,
                                       snakemake.config["device"], snakemake.threads), blocks)
rows, info = fit_and_predict_fold(classifier, splits["train"], splits["val"], group_of, snakemake.wildcards.fold)
write_fold_outputs(rows, info, classifier.classes, snakemake.output.predictions, snakemake.output.fit)
if snakemake.output.get("averaged"):  # rule train_classifier_tta
    averaged = group_averaged_rows(classifier, splits["val"], splits[VAL_ROTATED], snakemake.wildcards.fold,
                                   snakemake.params.averaging_group)
    write_fold_predictions(averaged, classifier.classes, snakemake.output.averaged)
log.info("%s: accuracy %.3f, fit %.1f s, predict %.2f s", dict(snakemake.wildcards.items()), info["accuracy"],
         info["fit_seconds"], info["predict_seconds"])
