"""Incremental reruns: what the extraction costs when micrographs are added to or removed from a store.

    python bench/bench_incremental.py --image-size 128 --json bench/results/cpu2_incremental_n2000_128px.json
    python bench/bench_incremental.py --n 500 --image-size 32          # a quicker look, same steps
    python bench/bench_incremental.py --image-size 224 --steps 2 --json bench/results/cpu2_incremental_n2000_224px.json

Steps, each a run of the workflow's ``hypercolumns`` target in one work folder (synthetic micrographs of
--image-size px in the NIOSH class proportions, 8 classes, 5 folds, the default balance strategies
[none, rotate], ``hypercolumns.shards: auto``, the paper's weights when ../shared has them, else random ones):

1. full extraction of N micrographs;
2. add 1% of N;
3. add N more (the set doubles);
4. remove 100 (seeded choice among all).

``--steps`` runs the first steps only (the store at 224 px and N = 2,000 holds ~27 GB, doubled ~55 GB).

Reported per step, from the jobs that ran (Snakemake's job list, their benchmark files and logs): extraction
jobs, their job seconds and CPU seconds, the seconds they spent extracting and the entries they computed (each
job's log line; the rest of a job's seconds is its start-up: Python, torch, the weights), the manifest's
entries and how many of them were extracted before, and the wall time of the whole invocation (ingestion,
folds, plans and the manifest included). Targets (issue 20): adding 1% costs <= 3% of the full extraction's
job seconds; doubling computes no entry extracted before; removing runs no extraction job.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import NIOSH, SHARED, counts_for, device_description, run_snakemake  # noqa: E402

from cntem.synthetic import render  # noqa: E402

SCHEME = {c: c for c in NIOSH}
DATA_SEED = 11


def add_micrographs(data: Path, n_total: int, size: int) -> int:
    """Write the micrographs that bring each class up to its share of `n_total` (NIOSH proportions), numbered
    after the class's existing ones; returns how many were written."""
    written = 0
    for cls, count in counts_for(n_total).items():
        folder = data / cls
        folder.mkdir(parents=True, exist_ok=True)
        have = len(list(folder.glob("*.tif")))
        for i in range(have, count):
            tifffile.imwrite(folder / f"{cls}-{i:05d}.tif", render(cls, DATA_SEED, i, (size, size), (8,)))
            written += 1
    return written


def extraction_figures(workdir: Path, log: str) -> dict:
    """Jobs of extract_hypercolumns in this invocation's log, with their job and CPU seconds and the entries
    they computed (each job's log line "<n> entries (<v> views) on ...")."""
    shards = sorted(set(re.findall(r"rule extract_hypercolumns:\n(?:.*\n)*?\s+wildcards: input_mode=squash, "
                                   r"shard=(\d+)", log)))
    seconds = cpu = extracting = 0.0
    entries = 0
    for shard in shards:
        with open(workdir / "results" / "benchmarks" / "extract_hypercolumns" / "squash" / f"shard-{shard}.tsv") as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        seconds, cpu = seconds + float(row["s"]), cpu + float(row["cpu_time"])
        job_log = (workdir / "results" / "logs" / "hypercolumns" / "squash" / f"shard-{shard}.log").read_text()
        done = re.search(r"(\d+) entries \(\d+ views\) on \S+ in ([\d.]+) s", job_log)
        entries, extracting = entries + int(done[1]), extracting + float(done[2])
    # job seconds = start-up (Python, torch, the weights) + the extraction the job's log times
    return {"extraction_jobs": len(shards), "extraction_job_seconds": round(seconds, 1),
            "extraction_cpu_seconds": round(cpu, 1), "seconds_extracting": round(extracting, 1),
            "entries_computed": entries}


def manifest_figures(workdir: Path, before: set) -> tuple[dict, set]:
    with open(workdir / "results" / "hypercolumns" / "squash" / "manifest.tsv") as fh:
        keys = {(r["id"], r["rotation"]) for r in csv.DictReader(fh, delimiter="\t")}
    shards = list((workdir / "results" / "hypercolumns" / "squash").glob("shard-*.h5"))
    return {"manifest_entries": len(keys), "entries_extracted_before": len(keys & before),
            "shard_files": len(shards), "store_mb": round(sum(p.stat().st_size for p in shards) / 1e6, 1)}, keys


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="micrographs of the first extraction")
    parser.add_argument("--image-size", type=int, default=32, help="micrograph side and hypercolumns.image_size")
    parser.add_argument("--remove", type=int, default=100, help="micrographs removed in the last step")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", help="work folder (default: a temporary one, deleted)")
    parser.add_argument("--steps", type=int, choices=range(1, 5), default=4, help="run the first STEPS steps")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    weights = str(SHARED) if SHARED.exists() else "random"
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        workdir = Path(args.workdir or tmp)
        data = workdir / "data"
        config = {"data": {"dir": str(data), "layout": "folders"}, "schemes": ["niosh8"],
                  "custom_schemes": {"niosh8": SCHEME}, "weights": weights,
                  "hypercolumns": {"image_size": args.image_size, "batch_size": 32}}
        load_before = os.getloadavg()
        steps, extracted = [], set()
        plan = [("full extraction", args.n), ("add 1%", round(args.n * 1.01)), ("double", round(args.n * 1.01) + args.n),
                ("remove", None)]
        for name, total in plan[:args.steps]:
            if total is None:
                files = sorted(data.rglob("*.tif"))
                for i in np.random.default_rng(5).choice(len(files), size=args.remove, replace=False):
                    files[i].unlink()
                change = -args.remove
            else:
                change = add_micrographs(data, total, args.image_size)
            start = time.perf_counter()
            run_snakemake(workdir, config, ["hypercolumns"], args.cores)
            wall = time.perf_counter() - start
            log = (workdir / "snakemake.log").read_text()
            manifest, keys = manifest_figures(workdir, extracted)
            step = {"step": name, "micrographs_changed": change, "micrographs": len(list(data.rglob("*.tif"))),
                    **extraction_figures(workdir, log), **manifest, "wall_seconds": round(wall, 1)}
            extracted |= keys
            steps.append(step)
            print(json.dumps(step), flush=True)
    by_name = {step["step"]: step for step in steps}
    full, added = by_name["full extraction"], by_name.get("add 1%")
    doubled, removed = by_name.get("double"), by_name.get("remove")
    result = {
        "machine": device_description(torch.device("cpu")), "cores": args.cores,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "weights": "shared (the paper's)" if weights != "random" else "random",
        "n": args.n, "image_size": args.image_size, "balance": "[none, rotate] (default)", "shards": "auto",
        "steps": steps,
    }
    if added:
        result["add_1pct_share_of_full_job_seconds"] = round(
            added["extraction_job_seconds"] / full["extraction_job_seconds"], 4)
        result["add_1pct_share_of_full_seconds_extracting"] = round(
            added["seconds_extracting"] / full["seconds_extracting"], 4)
    if doubled:
        result["double_recomputed_existing_entries"] = doubled["entries_computed"] - (
            doubled["manifest_entries"] - doubled["entries_extracted_before"])
    if removed:
        result["remove_extraction_jobs"] = removed["extraction_jobs"]
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
