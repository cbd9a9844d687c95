"""XGBoost learning options on a finished workflow's folds: fit seconds and 5-fold accuracy.

    python bench/bench_xgboost.py --results /work/bench-old/results --scheme 8class --balance rotate --k 50 \
        --options screen0.1,screen0.1-p10 --json bench/results/cpu2_xgboost_n1000.json
    nice python bench/bench_xgboost.py --results ... --options exact --json ...   # ~6 min a fold on 1 thread

Each fold's vlad.h5 is fitted and predicted as the train_classifier rule does it (the same Classifier
and evaluate.fit_and_predict_fold), on one thread like a learning job on 2 cores. An option is the
schema's XGBoost settings with a few changed (OPTIONS); `exact` changes none: the paper's method.
With --final, each option also fits all of fold 0's rows (training + validation), about the rows the
final model (train_model) fits. Results merge into an existing --json file, so options can be
measured in separate runs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cntem.classify import Classifier, settings_for
from cntem.evaluate import fit_and_predict_fold, summarize
from cntem.io import read_table
from cntem.runs import Representation
from cntem.schemes import ordered_classes
from cntem.encoded import load_encoded

# What each option changes in the schema's `xgboost` section.
OPTIONS = {
    "exact": {},
    **{f"screen{f}": {"screening": f} for f in (0.2, 0.1, 0.05)},
    **{f"screen{f}-p10": {"screening": f, "early_stopping_rounds": 10} for f in (0.2, 0.1, 0.05)},
}


def fold_paths(results: Path, scheme: str, balance: str, k: int, input_mode: str = "squash") -> list[Path]:
    folder = results / scheme / balance / Representation(input_mode, "vlad", k).name
    paths = sorted(folder.glob("fold*/vlad.h5"), key=lambda p: p.parent.name)
    if not paths:
        raise SystemExit(f"no fold*/vlad.h5 under {folder}")
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a workflow's results folder")
    parser.add_argument("--scheme", default="8class")
    parser.add_argument("--balance", default="rotate")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--options", default="exact," + ",".join(o for o in OPTIONS if o != "exact"),
                        help=f"comma-separated, of: {', '.join(OPTIONS)}")
    parser.add_argument("--final", action="store_true", help="also fit all of fold 0's rows (a final model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="merge the figures into this JSON file")
    args = parser.parse_args()
    options = args.options.split(",")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        parser.error(f"unknown option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}")

    group_of = {r["id"]: r["group"] for r in read_table(args.results / args.scheme / "folds.tsv")}
    predictions, fits = {o: [] for o in options}, {o: [] for o in options}
    final_seconds = {}
    for fold, path in enumerate(fold_paths(args.results, args.scheme, args.balance, args.k)):
        splits, _ = load_encoded(path)  # one fold in memory at a time
        train, val = splits["train"], splits["val"]
        classes = ordered_classes(train["y"] + val["y"])
        for option in options:
            classifier = Classifier(settings_for("xgboost", OPTIONS[option]), classes, args.device, args.threads)
            rows, info = fit_and_predict_fold(classifier, train, val, group_of, fold)
            predictions[option].append(rows)
            fits[option].append(info)
            print(f"fold {fold} {option:<16} {train['X'].shape} fit {info['fit_seconds']:7.1f} s  "
                  f"{info.get('best_iteration', -1) + 1:4d} trees  {info['columns']:6d} columns  "
                  f"accuracy {info['accuracy']:.3f}", flush=True)
            if args.final and fold == 0:
                every = {key: train[key] + val[key] for key in ("ids", "y")}
                x = np.concatenate([train["X"], val["X"]])
                start = time.perf_counter()
                classifier.fit(x, every["y"], [group_of[i] for i in every["ids"]])
                final_seconds[option] = {"seconds": time.perf_counter() - start, "rows": len(x)}
                print(f"final  {option:<16} {x.shape} fit {final_seconds[option]['seconds']:7.1f} s", flush=True)
        del splits, train, val

    figures = {}
    for option in options:
        summary = summarize(predictions[option], fits[option], classes)
        figures[option] = {
            "settings": OPTIONS[option], "threads": args.threads, "device": args.device,
            "fit_seconds": {"mean": summary["fit_seconds"]["mean"], "total": summary["fit_seconds"]["total"],
                            "folds": [f["fit_seconds"] for f in fits[option]]},
            "trees": [f.get("best_iteration", -1) + 1 for f in fits[option]],  # kept after early stopping (0: none)
            "columns": fits[option][0]["columns"],
            "accuracy": {"mean": summary["accuracy"]["mean"], "std": summary["accuracy"]["std"],
                         "folds": summary["accuracy"]["folds"]},
            "macro_f1": {"mean": summary["macro_f1"]["mean"], "std": summary["macro_f1"]["std"]},
            **({"final_model": final_seconds[option]} if option in final_seconds else {}),
        }

    print(f"\n{'option':<16}{'s / fold':>10}{'5 folds s':>11}{'trees kept':>16}{'columns':>9}{'accuracy':>18}")
    for option, f in figures.items():
        trees = f"{min(f['trees'])}-{max(f['trees'])}"
        print(f"{option:<16}{f['fit_seconds']['mean']:>10.1f}{f['fit_seconds']['total']:>11.1f}{trees:>16}"
              f"{f['columns']:>9}{f['accuracy']['mean']:>12.4f} ± {f['accuracy']['std']:.4f}")
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else {}
        header = {"results": str(args.results), "scheme": args.scheme, "balance": args.balance, "k": args.k,
                  "training_rows": [fit["n_train"] for fit in fits[options[0]]]}
        merged = {**previous, **header, "options": {**previous.get("options", {}), **figures}}
        args.json.write_text(json.dumps(merged, indent=1))


if __name__ == "__main__":
    main()
