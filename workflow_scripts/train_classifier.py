"""Rule train_classifier: fit one classifier on a fold's training VLADs, predict its validation images."""
import json

from cntem import rule_log
from cntem.classify import PREDICTION_COLUMNS, fit, predict, prediction_rows
from cntem.io import read_table, write_table
from cntem.schemes import scheme_classes
from cntem.vlad import load_vlad

log = rule_log(snakemake.log[0])
splits, _ = load_vlad(snakemake.input.vlad)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
classes = scheme_classes({c: c for c in set(splits["train"]["y"]) | set(splits["val"]["y"])})
train, val = splits["train"], splits["val"]
model = fit(snakemake.wildcards.classifier, train["X"], train["y"], [group_of[i] for i in train["ids"]],
            classes, snakemake.params.settings, snakemake.config["device"], snakemake.threads)
proba, predict_seconds = predict(model, val["X"])
rows = prediction_rows(val["ids"], [snakemake.wildcards.fold] * len(val["ids"]), val["y"], proba, classes)
write_table(snakemake.output.predictions, rows, PREDICTION_COLUMNS + [f"p_{c}" for c in classes])
model.info.update(predict_seconds=predict_seconds, classes=classes, n_train=len(train["ids"]),
                  train_ids=sorted(set(train["ids"])))
with open(snakemake.output.fit, "w") as fh:
    json.dump(model.info, fh, indent=1)
accuracy = sum(r["true"] == r["predicted"] for r in rows) / len(rows)
log.info("%s: accuracy %.3f, fit %.1f s, predict %.2f s", snakemake.wildcards, accuracy,
         model.info["fit_seconds"], predict_seconds)
