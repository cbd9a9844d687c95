"""What config/beyond.yaml's fusions cost: a synthetic stand-in for the real set the issue measured (319 micrographs of
512 x 350 px, 3 classes, 85 sources), run without the fusions and then with them.

    python bench/bench_beyond.py --json bench/results/cpu2_beyond_n319_r1.json
    python bench/bench_beyond.py --repeats 4        # the shipped 4 fold assignments: about 4x the learning jobs

Two invocations of the default target in one work folder, with config/beyond.yaml and a config naming the data:

1. ``fusion.methods: []``: beyond.yaml as it was before the fusions (its other keys as shipped);
2. beyond.yaml as shipped, on the finished run: only what the fusions add (their fold jobs and evaluations) and what
   they change (the selection's candidates, so its jobs, the comparison and the model) runs.

Reported per step: wall seconds, jobs by rule (Snakemake's job stats) and, for the rules with a benchmark file, job
seconds by rule; and the shipped configuration's estimated total: step 1, less the job seconds of the step-1 jobs that
step 2 redid, plus step 2. ``--repeats`` (default 1, a quarter of the shipped 4) keeps the run short: the fusions'
share of the learning jobs is the same per split. The images are synthetic (cntem.synthetic, the classes Cl, Fi,
Ma), so the accuracies say nothing; the costs are what to read.
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
from collections import defaultdict
from pathlib import Path

import tifffile
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import REPO, SHARED, benchmark_rows, device_description, run_snakemake  # noqa: E402

from cntem.synthetic import render  # noqa: E402

CLASSES = ("Cl", "Fi", "Ma")
DATA_SEED = 17


def write_micrographs(data: Path, n: int, sources: int, width: int, height: int) -> None:
    """n micrographs of width x height in class sub-folders, about n / 3 a class, and labels.csv giving each its
    source (group): `sources` of them, split between the classes."""
    rows = []
    for index in range(n):
        cls = CLASSES[index % len(CLASSES)]
        square = render(cls, DATA_SEED, index, (width, width), (8,))
        path = data / cls / f"{cls}-{index:04d}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, square[:height])
        rows.append((f"{cls}/{path.name}", cls, f"{cls}-source{index // len(CLASSES) % (sources // len(CLASSES))}"))
    with open(data / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "group"), *rows])


def job_seconds(workdir: Path) -> dict[str, tuple[str, float]]:
    """Every benchmark file of the run: path -> (rule, job seconds)."""
    seconds = {}
    for rule, tsv, row in benchmark_rows(workdir):
        seconds[str(tsv)] = (rule, seconds.get(str(tsv), (rule, 0.0))[1] + float(row["s"]))
    return seconds


def job_counts(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of one invocation: jobs per rule."""
    if "Job stats:" not in log:
        return {}
    table = log.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "total"}


def run_step(workdir: Path, config: dict, cores: int, before: dict) -> tuple[dict, dict]:
    start = time.time()
    wall = run_snakemake(workdir, config, [], cores)
    after = job_seconds(workdir)
    ran = {path: value for path, value in after.items() if os.path.getmtime(path) >= start}
    by_rule = defaultdict(float)
    for rule, seconds in ran.values():
        by_rule[rule] += seconds
    step = {"wall_seconds": round(wall, 1), "jobs": job_counts((workdir / "snakemake.log").read_text()),
            "job_seconds_by_rule": {rule: round(s, 1) for rule, s in sorted(by_rule.items())},
            "job_seconds": round(sum(by_rule.values()), 1),
            "redone_job_seconds": round(sum(before[p][1] for p in ran if p in before), 1)}
    return step, after


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=319, help="micrographs")
    parser.add_argument("--sources", type=int, default=85, help="sources (groups) the micrographs come from")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=350)
    parser.add_argument("--repeats", type=int, default=1, help="cv.repeats (beyond.yaml ships 4)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", help="work folder (default: a temporary one, deleted)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    beyond = yaml.safe_load((REPO / "config" / "beyond.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-beyond-") as tmp:
        workdir = Path(args.workdir or tmp)
        data = workdir / "data"
        if not (data / "labels.csv").exists():
            write_micrographs(data, args.n, args.sources, args.width, args.height)
        config = {**beyond, "data": {**beyond["data"], "dir": str(data), "labels_csv": str(data / "labels.csv")},
                  "cv": {**beyond["cv"], "repeats": args.repeats},
                  "weights": str(SHARED) if SHARED.exists() else "random"}
        load_before = os.getloadavg()
        without, seconds = run_step(workdir, {**config, "fusion": {**beyond["fusion"], "methods": []}}, args.cores, {})
        print(json.dumps({"step": "without fusion", **without}), flush=True)
        shipped, _ = run_step(workdir, config, args.cores, seconds)
        print(json.dumps({"step": "shipped", **shipped}), flush=True)
    total = without["job_seconds"] - shipped["redone_job_seconds"] + shipped["job_seconds"]
    result = {
        "machine": device_description(torch.device("cpu")), "cores": args.cores,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "n": args.n, "sources": args.sources, "size": [args.width, args.height], "repeats": args.repeats,
        "fusions": beyond["fusion"]["methods"],
        "steps": {"without fusion": without, "shipped": shipped},
        "shipped_job_seconds_estimate": round(total, 1),
        "fusion_share_of_job_seconds": round((total - without["job_seconds"]) / without["job_seconds"], 4),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
