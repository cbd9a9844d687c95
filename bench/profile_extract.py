"""Where the time of one extraction goes: loader wait, network + sampling, device->host copy.

    PYTHONPATH=workflow_scripts python bench/profile_extract.py --n 256 --batch-size 64 --device cuda
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cntem.backbone import load_weights, resolve_device
from cntem.features import ExtractionSettings
from cntem.hypercolumns import (EntryImages, HypercolumnNet, autocast_for, collate_entries,
                               hypercolumns_at, net_input)
from cntem.synthetic import generate_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    settings = ExtractionSettings(batch_size=args.batch_size)
    weights = load_weights("random")
    net = HypercolumnNet(weights, settings.taps, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp) / "im", {"Cl": args.n}, seed=0, size_range=(256, 640))
        entries = [{"id": p.name, "rotation": 0, "path": str(p)} for p in sorted((Path(tmp) / "im").glob("*.tif"))]
        loader = torch.utils.data.DataLoader(EntryImages(entries, settings), batch_size=args.batch_size,
                                             num_workers=args.workers, pin_memory=device.type == "cuda",
                                             collate_fn=collate_entries)
        t = {"loader wait": 0.0, "network + sampling": 0.0, "copy to host (pageable)": 0.0}
        if device.type == "cuda":
            t["copy to host (pinned)"] = 0.0
        pinned = None
        mark = time.perf_counter()
        with torch.inference_mode():
            for batch in loader:
                images, coords = batch.images, batch.coords
                now = time.perf_counter()
                t["loader wait"] += now - mark
                with autocast_for(device):
                    maps, _ = net(net_input(images, weights, device))
                cols = hypercolumns_at(maps, coords.to(device), settings.image_size)
                sync()
                t["network + sampling"] += time.perf_counter() - now
                now = time.perf_counter()
                cols.cpu().numpy()
                t["copy to host (pageable)"] += time.perf_counter() - now
                if device.type == "cuda":
                    if pinned is None or pinned.shape != cols.shape:
                        pinned = torch.empty(cols.shape, dtype=cols.dtype, pin_memory=True)
                    now = time.perf_counter()
                    pinned.copy_(cols)
                    t["copy to host (pinned)"] += time.perf_counter() - now
                mark = time.perf_counter()
    for key, seconds in t.items():
        print(f"{key:<26}{seconds:8.2f} s  {1000 * seconds / args.n:7.2f} ms/image")


if __name__ == "__main__":
    main()
