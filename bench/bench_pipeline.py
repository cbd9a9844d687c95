"""Whole-workflow benchmark: N synthetic images through the DAG, per-stage time and peak memory.

    python bench/bench_pipeline.py --n 200
    python bench/bench_pipeline.py --n 1000 --cores 16 --workdir /scratch/bench

Stages are read from Snakemake's own per-job benchmark files (results/benchmarks/): for each
rule, the number of jobs, the summed job seconds and the largest peak RSS of any job. The
experiment is the paper's main one: 8 classes in the NIOSH proportions, rotation balancing,
K = 50, gradient boosting and the LS baseline, 5-fold CV, plus the final model.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "weights" / "vgg16_imagenet_caffe.pth"
# Image counts per class in the NIOSH dataset (paper, Fig. 3; NC sub-classes approximate).
NIOSH = {"Cl": 725, "Fi": 442, "Ma": 1702, "MS": 1259, "GS": 250, "SP": 300, "HDP": 200, "PR": 200}
STAGES = ["demo_dataset", "ingest", "extract_hypercolumns", "fit_dictionary", "encode_vlad", "train_classifier",
          "train_baseline", "train_model"]


def counts_for(n: int) -> dict:
    total = sum(NIOSH.values())
    return {c: max(5, round(n * v / total)) for c, v in NIOSH.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--cores", default="all")
    parser.add_argument("--weights", default=str(SHARED) if SHARED.exists() else "random")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", help="run here (kept); default: a temporary folder")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cntem-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "data": {"dir": "results/demo/images", "layout": "niosh", "labels_csv": "results/demo/labels.csv"},
        "demo": {"enabled": True, "seed": 11, "size_range": [256, 1024], "counts": counts_for(args.n)},
        "schemes": ["8class"], "balance": {"strategies": ["rotate"]}, "weights": args.weights,
        "device": args.device, "k": 50, "k_values": [50], "classifiers": ["xgboost"],
        "hypercolumns": {"batch_size": 64 if args.device != "cpu" else 16, "shards": 32},
        "model": {"scheme": "8class"},
    }
    (workdir / "bench.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/metrics.tsv", "results/model/8class/model.json"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(args.cores), *targets, "--configfile", str(workdir / "bench.yaml")]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr[-5000:])

    stages = defaultdict(lambda: {"jobs": 0, "job_seconds": 0.0, "peak_rss_mb": 0.0})
    for tsv in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        for row in csv.DictReader(open(tsv), delimiter="\t"):
            stage = stages[rule]
            stage["jobs"] += 1
            stage["job_seconds"] += float(row["s"])
            if row["max_rss"] not in ("-", "NA", ""):
                stage["peak_rss_mb"] = max(stage["peak_rss_mb"], float(row["max_rss"]))
    metrics = {r["metric"]: r for r in csv.DictReader(open(workdir / "results" / "metrics.tsv"), delimiter="\t")
               if r["class"] == "all" and r["method"] == "hcol" and r["metric"] == "accuracy"}
    print(f"{'stage':<22}{'jobs':>6}{'job seconds':>14}{'peak RSS MB':>14}")
    for name in STAGES:
        if name in stages:
            s = stages[name]
            print(f"{name:<22}{s['jobs']:>6}{s['job_seconds']:>14.1f}{s['peak_rss_mb']:>14.0f}")
    images = sum(config["demo"]["counts"].values())
    print(f"\n{images} images, wall time {wall:.0f} s with --cores {args.cores}; "
          f"8-class accuracy (K=50, XGBoost) {float(metrics['accuracy']['mean']):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": images, "wall_seconds": wall, "stages": stages,
                                               "accuracy": float(metrics["accuracy"]["mean"])}, indent=1))


if __name__ == "__main__":
    main()
