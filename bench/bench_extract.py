"""Hypercolumn extraction speed: bare VGG16 forward vs the full extraction (decode + network +
sparse sampling + HDF5 writes), same device, batch size and precision.

    python bench/bench_extract.py --n 96 --batch-size 16            # CPU here
    python bench/bench_extract.py --n 512 --batch-size 64 --device cuda
    python bench/bench_extract.py --n 64 --size-range 1024 2048      # micrograph-sized inputs
    python bench/bench_extract.py --n 8 --size-range 1024 1024 --input-mode tiles   # or native

Prints images/s for both (and for the extraction without its HDF5 writes, which shows whether
the disk is the limit: each view is ~4.6 MB of float16 at 224 px), their ratio per 224-px view (squash: one
an image; tiles and native: the views covering it), peak memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from cntem.backbone import load_weights, resolve_device
from cntem.features import ExtractionSettings
from cntem.hypercolumns import HypercolumnNet, autocast_for, extract_shard, iter_hypercolumns, loader_workers
from cntem.synthetic import generate_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vgg16_imagenet_caffe.pth"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(net, device, batch, size, batches) -> float:
    """Images/s of the VGG16 conv stack alone on random input (bf16 autocast, channels_last)."""
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast_for(device):
        net.features(x)  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            net.features(x)
        sync(device)
    return batch * batches / (time.perf_counter() - start)


def without_writes(entries, net, weights, settings, device, workers) -> float:
    """Images/s of decode + network + sparse sampling + device->host copy, no HDF5 writes."""
    start = time.perf_counter()
    n = sum(len(batch.views) for batch in iter_hypercolumns(entries, net, weights, settings, device, workers))
    return n / (time.perf_counter() - start)


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=96, help="images to extract")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size-range", type=int, nargs=2, default=(256, 640), metavar=("LOW", "HIGH"),
                        help="sides of the synthetic micrographs (half 8-bit, half 16-bit); real ones are 1-4k px")
    parser.add_argument("--input-mode", default="squash", choices=["squash", "center_crop", "tiles", "native"])
    parser.add_argument("--max-side", type=int, default=1024, help="tiles, native: longer side cap")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument("--workers", type=int, help="decoding processes (default: as the workflow, loader_workers)")
    parser.add_argument("--weights", default=str(SHARED) if SHARED.exists() else "random")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers is None:
        args.workers = loader_workers(device, torch.get_num_threads())
    weights = load_weights(args.weights)
    settings = ExtractionSettings(batch_size=args.batch_size, input_mode=args.input_mode, max_side=args.max_side)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        generate_dataset(images, {"Cl": args.n // 2, "Ma": args.n - args.n // 2}, seed=0,
                         size_range=tuple(args.size_range))
        entries = [{"id": p.name, "rotation": 0, "path": str(p)} for p in sorted(images.glob("*.tif"))]
        net = HypercolumnNet(weights, settings.taps, device)
        forward = bare_forward(net, device, args.batch_size, settings.image_size, max(2, args.n // args.batch_size))
        no_write = without_writes(entries, net, weights, settings, device, args.workers)
        full = extract_shard(entries, Path(tmp) / "shard.h5", weights, settings, device, workers=args.workers,
                             progress=False)
    figures = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "batch_size": args.batch_size, "images": args.n, "size_range": list(args.size_range),
        "input_mode": args.input_mode, "max_side": args.max_side, "views": full["views"],
        "weights": Path(args.weights).name,
        "bare_forward_img_s": round(forward, 2), "extraction_no_writes_img_s": round(no_write, 2),
        "extraction_img_s": round(full["images_per_s"], 2),
        "extraction_views_s": round(full["views"] / full["seconds"], 2),
        "ratio": round(full["views"] / full["seconds"] / forward, 3), "peak_rss_mb": round(peak_rss_mb()),
    }
    if device.type == "cuda":
        figures["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
