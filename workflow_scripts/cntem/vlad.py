"""VLAD encoding (Jegou et al. 2010; Arandjelovic & Zisserman 2013) of sparse hypercolumns.

For each image: every vector is assigned to its nearest centroid, residuals (x - c_k) are summed
per centroid, each centroid's block is L2-normalised (intra-normalisation; empty clusters stay
zero), and the whole vector is L2-normalised. Optional signed square-root (power)
normalisation is applied to the sums first. Batched in torch, on the GPU when there is one.
"""
from __future__ import annotations

import h5py
import numpy as np
import torch


def vlad(x: torch.Tensor, centroids: torch.Tensor, power_norm: bool = False) -> torch.Tensor:
    """(B, P, D) descriptors, (K, D) centroids -> (B, K * D) VLAD vectors."""
    b, _, d = x.shape
    k = centroids.shape[0]
    # Squared distances up to the per-vector constant |x|^2, which does not change the argmin.
    scores = centroids.pow(2).sum(1) - 2 * (x @ centroids.T)  # (B, P, K)
    assign = scores.argmin(-1)  # (B, P)
    # Row (image b, centroid k) of the flattened sums receives every descriptor of b assigned to k.
    rows = (assign + k * torch.arange(b, device=x.device).unsqueeze(1)).reshape(-1)
    sums = torch.zeros(b * k, d, dtype=x.dtype, device=x.device).index_add_(0, rows, x.reshape(-1, d))
    counts = torch.bincount(rows, minlength=b * k).to(x.dtype)
    v = (sums - counts.unsqueeze(-1) * centroids.repeat(b, 1)).view(b, k, d)  # sum of residuals per centroid
    if power_norm:
        v = v.sign() * v.abs().sqrt()
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # intra-normalisation
    v = v.reshape(b, k * d)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def encode(store, entries, dictionary, device: torch.device, power_norm: bool = False,
           batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """VLAD vectors (N, K * d) float32 for (id, rotation) `entries` read from a HypercolumnStore."""
    from tqdm import tqdm

    centroids = torch.from_numpy(dictionary.centroids).to(device)
    mean = rows = None
    if dictionary.pca_components is not None:
        mean = torch.from_numpy(dictionary.pca_mean).to(device)
        rows = torch.from_numpy(dictionary.pca_components).to(device)
    out = np.empty((len(entries), centroids.numel()), np.float32)
    # Batch buffers are allocated once: a fresh ~100 MB array per batch costs more in page faults
    # than the float16 -> float32 conversion itself.
    raw = np.empty((batch_size, *store.entry_shape), np.float16)
    staging = torch.empty(raw.shape, dtype=torch.float32, device=device)
    bar = tqdm(total=len(entries), desc="VLAD", unit="img", disable=not progress)
    for start in range(0, len(entries), batch_size):
        chunk = entries[start:start + batch_size]
        for row, (image_id, rotation) in enumerate(chunk):
            store.read_hypercolumns_into(image_id, rotation, raw[row])
        # On a GPU the float16 batch crosses the bus and is widened there (half the bytes).
        x = staging[:len(chunk)].copy_(torch.from_numpy(raw[:len(chunk)]).to(device))
        out[start:start + len(chunk)] = encode_descriptors(x, centroids, mean, rows, power_norm).cpu().numpy()
        bar.update(len(chunk))
    bar.close()
    return out


def encode_descriptors(x, centroids, mean=None, rows=None, power_norm=False) -> torch.Tensor:
    """Project (when a PCA is given) and VLAD-encode a (B, P, D) float32 batch."""
    if rows is not None:
        # (x - mean) R^T as x R^T - mean R^T: no centred copy of the batch, half the time on CPU.
        x = x @ rows.T - mean @ rows.T
    return vlad(x, centroids, power_norm)


def save_vlad(path, splits: dict, meta: dict) -> None:
    """splits: name -> dict(X, ids, rotations, y); one HDF5 group per split."""
    with h5py.File(path, "w") as h5:
        for name, s in splits.items():
            g = h5.create_group(name)
            g.create_dataset("X", data=s["X"], chunks=(1, s["X"].shape[1]) if len(s["X"]) else None)
            g.create_dataset("ids", data=np.array(s["ids"], dtype=h5py.string_dtype()))
            g.create_dataset("rotations", data=np.asarray(s["rotations"], dtype=np.int16))
            g.create_dataset("y", data=np.array(s["y"], dtype=h5py.string_dtype()))
        for key, value in meta.items():
            h5.attrs[key] = value


def load_vlad(path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as h5:
        splits = {name: {"X": g["X"][()], "ids": list(g["ids"].asstr()[()]),
                         "rotations": g["rotations"][()], "y": list(g["y"].asstr()[()])}
                  for name, g in h5.items()}
        return splits, dict(h5.attrs)
