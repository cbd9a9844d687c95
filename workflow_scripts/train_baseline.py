"""Rule train_baseline: the paper's VGG16 + linear softmax on pooled top-layer features."""
import json

from cntem import rule_log
from cntem.classify import PREDICTION_COLUMNS, fit, predict, prediction_rows
from cntem.folds import fold_entries
from cntem.shards import HypercolumnStore
from cntem.io import read_table, write_table
from cntem.schemes import scheme_classes

log = rule_log(snakemake.log[0])
fold = snakemake.wildcards.fold
splits = fold_entries(read_table(snakemake.input.plan), fold)
group_of = {r["id"]: r["group"] for r in read_table(snakemake.input.folds)}
classes = scheme_classes({r["class"]: r["class"] for r in splits["train"] + splits["val"]})
with HypercolumnStore(snakemake.input.shards) as store:
    x = {name: store.pooled([(r["id"], r["rotation"]) for r in rows]) for name, rows in splits.items()}
train, val = splits["train"], splits["val"]
model = fit("linear_softmax", x["train"], [r["class"] for r in train], [group_of[r["id"]] for r in train],
            classes, snakemake.params.settings, threads=snakemake.threads)
proba, predict_seconds = predict(model, x["val"])
rows = prediction_rows([r["id"] for r in val], [fold] * len(val), [r["class"] for r in val], proba, classes)
write_table(snakemake.output.predictions, rows, PREDICTION_COLUMNS + [f"p_{c}" for c in classes])
model.info.update(predict_seconds=predict_seconds, classes=classes, n_train=len(train),
                  train_ids=sorted({r["id"] for r in train}), feature_dim=int(x["train"].shape[1]))
with open(snakemake.output.fit, "w") as fh:
    json.dump(model.info, fh, indent=1)
log.info("baseline fold %s: accuracy %.3f", fold, sum(r["true"] == r["predicted"] for r in rows) / len(rows))
