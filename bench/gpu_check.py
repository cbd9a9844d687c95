"""Prove the GPU paths against the CPU ones and time them (run on a machine with CUDA).

    PYTHONPATH=workflow_scripts python bench/gpu_check.py [--faiss]

1. hypercolumns on CUDA (bf16 autocast) vs CPU (float32): relative error;
2. VLAD on CUDA vs CPU: identical assignments up to ties, relative error, time;
3. XGBoost on CUDA vs CPU on VLAD-sized data (K = 50 -> 73,600 features): fit time, agreement;
4. with --faiss: FAISS GPU K-means vs CPU K-means objective and time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cntem.backbone import load_weights
from cntem.features import ExtractionSettings
from cntem.hypercolumns import HypercolumnNet, net_input, sample_coordinates
from cntem.maps import sample_feature_maps
from cntem.vlad import vlad


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def timed(fn, sync=True):
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def check_hypercolumns(weights):
    settings = ExtractionSettings()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (4, 224, 224), dtype=np.uint8))
    coords = torch.from_numpy(np.stack([sample_coordinates(0, f"im{i}", 0, 224, settings.n_pixels) for i in range(4)]))
    out = {}
    for device, autocast in ((torch.device("cpu"), False), (torch.device("cuda"), True)):
        net = HypercolumnNet(weights, settings.taps, device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            maps, _ = net(net_input(images, weights, device))
            columns = [sample_feature_maps(m, coords.to(device), 224) for m in maps]
            out[device.type] = torch.cat(columns, -1).cpu().numpy()
    print(f"hypercolumns  CUDA bf16 vs CPU fp32: relative error {rel(out['cuda'], out['cpu']):.2e} "
          f"(shape {out['cuda'].shape})")


def check_vlad():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5017, 1472, generator=g, dtype=torch.float16)
    c = torch.randn(50, 1472, generator=g)
    cpu_start = time.perf_counter()
    v_cpu = torch.cat([vlad(x[i:i + 8].float(), c) for i in range(0, 16, 8)])  # 16 entries on CPU
    cpu_s = (time.perf_counter() - cpu_start) / 16
    cg = c.cuda()
    v_gpu, gpu_s = timed(lambda: torch.cat([vlad(x[i:i + 32].cuda().float(), cg) for i in range(0, 300, 32)]))
    print(f"VLAD K=50     CUDA vs CPU: relative error {rel(v_gpu[:16].cpu(), v_cpu):.2e}; "
          f"{1000 * gpu_s / 300:.1f} ms/image on CUDA (incl. host->device copy) vs {1000 * cpu_s:.0f} ms/image on CPU")


def check_xgboost():
    from cntem.classify import Classifier, XGBoostSettings, xgboost_device

    rng = np.random.default_rng(0)
    n, d, classes = 400, 73_600, ["Cl", "Fi", "Ma", "MS"]
    y = [classes[i % 4] for i in range(n)]
    x = rng.normal(0, 1, (n, d)).astype(np.float32)
    x[:, :40] += np.repeat(np.eye(4), 10, axis=1)[[classes.index(c) for c in y]] * 1.5
    settings = XGBoostSettings(early_stopping_rounds=None)
    groups = [str(i) for i in range(n)]
    res = {}
    for device in ("cpu", "cuda"):
        model = Classifier(settings, classes, device=device, threads=16).fit(x[:300], y[:300], groups[:300])
        proba = model.predict_proba(x[300:])
        res[device] = (model.info["fit_seconds"], model.info["device"], proba)
    agree = np.mean(res["cpu"][2].argmax(1) == res["cuda"][2].argmax(1))
    acc = {k: np.mean(np.array(classes)[v[2].argmax(1)] == np.array(y[300:])) for k, v in res.items()}
    print(f"XGBoost       device auto -> {xgboost_device('auto')}; 300 x {d} fit: CPU (16 threads) "
          f"{res['cpu'][0]:.1f} s, CUDA {res['cuda'][0]:.1f} s ({res['cuda'][1]}); accuracy CPU {acc['cpu']:.2f} / "
          f"CUDA {acc['cuda']:.2f}, predictions agree on {100 * agree:.0f}%")


def check_faiss():
    from cntem.dictionary import faiss_gpu_count, fit_kmeans

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (100_000, 1472)).astype(np.float32)
    print(f"FAISS         GPUs visible: {faiss_gpu_count()}")
    for use_gpu in (False, True):
        start = time.perf_counter()
        _, obj = fit_kmeans(x, 50, niter=20, seed=1, max_points_per_centroid=256, use_gpu=use_gpu)
        print(f"FAISS         K-means K=50 on 12,800 x 1472 (gpu={use_gpu}): {time.perf_counter() - start:.1f} s, "
              f"objective {obj:.4g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--faiss", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["hypercolumns", "vlad", "xgboost"])
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"device        {torch.cuda.get_device_name()}, torch {torch.__version__}")
    weights = load_weights(args.weights)
    if "hypercolumns" not in args.skip:
        check_hypercolumns(weights)
    if "vlad" not in args.skip:
        check_vlad()
    if "xgboost" not in args.skip:
        check_xgboost()
    if args.faiss:
        check_faiss()


if __name__ == "__main__":
    main()
