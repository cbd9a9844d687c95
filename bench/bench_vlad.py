"""VLAD encoding speed: on the stored maps (what every encoding job does) against VLAD of the assembled
hypercolumns (what it did before), in one run, on the same shard entries and dictionary.

    python bench/bench_vlad.py --n 64 --json bench/results/cpu2_vlad.json

A shard of --n synthetic micrographs is extracted first (paper settings: 224 px, 10% of the pixels,
five taps; not timed). Then, for the paper's full-width dictionary (K = 50 over 1472 features) and for
a PCA to 64 dimensions (the demo's), each path encodes every entry once per repeat: (a) assembled:
read each entry's hypercolumns (deep taps interpolated at the 5,017 pixels) and take vlad() of the
batch; (b) maps: VladEncoder.transform_store, which never assembles a hypercolumn. Reported: ms per
entry of each path (best of --repeats), their ratio, and how far the vectors differ (largest absolute
difference; smallest cosine between the two vectors of an entry: float32 rounding, so an occasional
near-tie assigns a pixel to another centroid).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cntem.backbone import load_weights
from cntem.dictionary import VisualDictionary
from cntem.features import ExtractionSettings
from cntem.hypercolumns import extract_shard
from cntem.shards import HypercolumnStore
from cntem.synthetic import generate_dataset
from cntem.vlad import VladEncoder, vlad

SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vgg16_imagenet_caffe.pth"


def assembled_path(encoder: VladEncoder, store, entries) -> np.ndarray:
    """VLAD of the assembled hypercolumns, batch by batch, as the encoder did before it worked on maps."""
    d = encoder.dictionary
    centroids = torch.from_numpy(d.centroids_)
    batch = np.empty((encoder.batch_size, *store.view_shape), np.float32)
    out = []
    for start in range(0, len(entries), encoder.batch_size):
        chunk = entries[start:start + encoder.batch_size]
        for row, [view] in enumerate(store.entry_views(chunk)):  # squashed entries: one view each
            store.read_hypercolumns_into(view, batch[row])
        x = torch.from_numpy(batch[:len(chunk)])
        if d.pca_components_ is not None:
            rows = torch.from_numpy(d.pca_components_)
            x = x @ rows.T - torch.from_numpy(d.pca_mean_) @ rows.T
        out.append(vlad(x, centroids, encoder.power_norm).numpy())
    return np.concatenate(out)


def best_seconds(run, repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="synthetic micrographs in the shard")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=str(SHARED) if SHARED.exists() else "random")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cntem-bench-vlad-"))
    counts = {"Cl": args.n // 4, "Fi": args.n // 4, "Ma": args.n // 4, "MS": args.n - 3 * (args.n // 4)}
    generate_dataset(workdir / "images", counts, seed=3, size_range=(256, 1024))
    entries = [{"id": p.name, "rotation": 0, "path": str(p)} for p in sorted((workdir / "images").glob("*.tif"))]
    settings = ExtractionSettings(batch_size=16)
    extract_shard(entries, workdir / "shard.h5", load_weights(args.weights), settings, torch.device("cpu"),
                  workers=0, progress=False)
    keys = [(e["id"], 0) for e in entries]
    figures = {"entries": len(keys), "threads": torch.get_num_threads(), "weights": args.weights, "cases": {}}
    with HypercolumnStore([workdir / "shard.h5"]) as store:
        for name, pca_dim in (("full width, K=50 x 1472", None), ("PCA 64, K=50 x 64", 64)):
            dictionary = VisualDictionary(50, sample_size=50000, pca_dim=pca_dim, device="cpu").fit(store, keys)
            encoder = VladEncoder(dictionary)
            maps_s, on_maps = best_seconds(lambda: encoder.transform_store(store, keys), args.repeats)
            assembled_s, assembled = best_seconds(lambda: assembled_path(encoder, store, keys), args.repeats)
            cosine = np.sum(on_maps * assembled, 1)  # both L2-normalised
            figures["cases"][name] = {
                "maps_ms_per_entry": round(1000 * maps_s / len(keys), 2),
                "assembled_ms_per_entry": round(1000 * assembled_s / len(keys), 2),
                "speed-up": round(assembled_s / maps_s, 2),
                "max_abs_difference": float(np.abs(on_maps - assembled).max()),
                "min_cosine": float(cosine.min())}
    for name, case in figures["cases"].items():
        print(f"{name:<26} maps {case['maps_ms_per_entry']:6.1f} ms/entry, assembled "
              f"{case['assembled_ms_per_entry']:6.1f} ms/entry: {case['speed-up']:.2f}x; largest difference "
              f"{case['max_abs_difference']:.1e}, smallest cosine {case['min_cosine']:.6f}")
    print(f"{len(keys)} entries, {figures['threads']} torch threads")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
