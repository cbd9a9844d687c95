"""VLAD encoding (Jegou et al. 2010; Arandjelovic & Zisserman 2013) of sparse hypercolumns.

For each image: every vector is assigned to its nearest centroid, residuals (x - c_k) are summed
per centroid, each centroid's block is L2-normalised (intra-normalisation; empty clusters stay
zero), and the whole vector is L2-normalised. Optional signed square-root (power)
normalisation is applied to the sums first. Batched in torch, on the GPU when there is one.

:class:`VladEncoder` is the one implementation: cross-validation encodes shard entries with it,
the final model and prediction encode the hypercolumns of image files with it.
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


class VladEncoder:
    """An image representation: the VLAD vector of its hypercolumns over a fitted VisualDictionary.

    ``fit`` fits the dictionary (on training entries only); ``transform`` encodes a batch of
    hypercolumns; ``transform_store`` streams entries of a HypercolumnStore through ``transform``
    with memory flat in their number.
    """

    name = "vlad"

    def __init__(self, dictionary, power_norm: bool = False, device: torch.device | str = "cpu",
                 batch_size: int = 8):
        self.dictionary, self.power_norm = dictionary, power_norm
        self.device, self.batch_size = torch.device(device), batch_size
        self._tensors = None  # the dictionary's arrays on `device`, made on first use

    @property
    def dim(self) -> int:
        return self.dictionary.k * self.dictionary.dim

    def to(self, device: torch.device | str) -> "VladEncoder":
        """Encode on `device` from now on."""
        self.device, self._tensors = torch.device(device), None
        return self

    def fit(self, store, entries, progress: bool = False) -> "VladEncoder":
        self.dictionary.fit(store, entries, progress)
        self._tensors = None
        return self

    def transform(self, hypercolumns: torch.Tensor) -> torch.Tensor:
        """(B, P, D) float32 hypercolumns on `device` -> (B, K * d) VLAD vectors."""
        if self._tensors is None:
            d = self.dictionary
            as_tensor = lambda a: None if a is None else torch.from_numpy(a).to(self.device)  # noqa: E731
            self._tensors = (as_tensor(d.centroids_), as_tensor(d.pca_mean_), as_tensor(d.pca_components_))
        centroids, mean, rows = self._tensors
        x = hypercolumns
        if rows is not None:
            # (x - mean) R^T as x R^T - mean R^T: no centred copy of the batch, half the time on CPU.
            x = x @ rows.T - mean @ rows.T
        return vlad(x, centroids, self.power_norm)

    def transform_store(self, store, entries, progress: bool = False, out=None):
        """VLAD vectors (N, K * d) float32 of (id, rotation) `entries` read from a HypercolumnStore.

        Written batch by batch into `out` (an array or an HDF5 dataset of that shape) when given,
        so that memory stays flat in N; else returned as a new array.
        """
        from tqdm import tqdm

        if out is None:
            out = np.empty((len(entries), self.dim), np.float32)
        # The batch buffer is allocated once (a fresh ~200 MB array per batch costs more in page faults
        # than filling it), in float32: the store assembles the hypercolumns straight into it.
        batch = np.empty((self.batch_size, *store.entry_shape), np.float32)
        bar = tqdm(total=len(entries), desc="VLAD", unit="img", disable=not progress)
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start:start + self.batch_size]
            for row, (image_id, rotation) in enumerate(chunk):
                store.read_hypercolumns_into(image_id, rotation, batch[row])
            x = torch.from_numpy(batch[:len(chunk)]).to(self.device)
            out[start:start + len(chunk)] = self.transform(x).cpu().numpy()
            bar.update(len(chunk))
        bar.close()
        return out

    def describe(self) -> dict:
        return {"representation": self.name, "power_norm": self.power_norm, "k": self.dictionary.k}


def write_vlad(path, encoder: VladEncoder, store, splits: dict, progress: bool = False) -> None:
    """Encode each split's plan rows (id, rotation, class) from `store` into one HDF5 group per split.

    Vectors go to the file as they are made: the job's memory does not grow with the entries.
    """
    with h5py.File(path, "w") as h5:
        for name, rows in splits.items():
            g = h5.create_group(name)
            x = g.create_dataset("X", (len(rows), encoder.dim), np.float32,
                                 chunks=(1, encoder.dim) if rows else None)
            encoder.transform_store(store, [(r["id"], int(r["rotation"])) for r in rows], progress, out=x)
            g.create_dataset("ids", data=np.array([r["id"] for r in rows], dtype=h5py.string_dtype()))
            g.create_dataset("rotations", data=np.array([int(r["rotation"]) for r in rows], dtype=np.int16))
            g.create_dataset("y", data=np.array([r["class"] for r in rows], dtype=h5py.string_dtype()))
        h5.attrs.update(encoder.describe())


def load_vlad(path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as h5:
        splits = {name: {"X": g["X"][()], "ids": list(g["ids"].asstr()[()]),
                         "rotations": g["rotations"][()], "y": list(g["y"].asstr()[()])}
                  for name, g in h5.items()}
        return splits, dict(h5.attrs)
