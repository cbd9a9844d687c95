"""Rule train_baseline: the paper's VGG16 + linear softmax on pooled top-layer features; as rule train_baseline_tta,
also the validation images' predictions averaged over the averaging group."""
from cntem import rule_log
from cntem.config import make_classifier
from cntem.evaluate import fit_and_predict_fold, group_averaged_rows, write_fold_outputs, write_fold_predictions
from cntem.folds import VAL_ROTATED, entry_keys, fold_entries
from cntem.io import read_table
from cntem.schemes import ordered_classes
from cntem.shards import HypercolumnStore

log = rule_log(snakemake.log[0])
averaged_path = snakemake.output.get("averaged")  # rule train_baseline_tta
splits = fold_entries(read_table(snakemake.input.plan), snakemake.wildcards.fold, rotated=bool(averaged_path))
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
with HypercolumnStore(snakemake.input.shards) as store:
    features = {role: {"X": store.pooled(entry_keys(rows)), "ids": [r["id"] for r in rows],
                       "rotations": [r["rotation"] for r in rows], "y": [r["class"] for r in rows]}
                for role, rows in splits.items()}
classes = ordered_classes(features["train"]["y"] + features["val"]["y"])
classifier = make_classifier("linear_softmax", snakemake.params.settings, classes, threads=snakemake.threads)
rows, info = fit_and_predict_fold(classifier, features["train"], features["val"], group_of, snakemake.wildcards.fold)
write_fold_outputs(rows, info, classifier.classes, snakemake.output.predictions, snakemake.output.fit)
if averaged_path:
    averaged = group_averaged_rows(classifier, features["val"], features[VAL_ROTATED], snakemake.wildcards.fold,
                                   snakemake.params.averaging_group)
    write_fold_predictions(averaged, classifier.classes, averaged_path)
log.info("baseline fold %s: accuracy %.3f", snakemake.wildcards.fold, info["accuracy"])
