"""VLAD encoding (Jegou et al. 2010; Arandjelovic & Zisserman 2013) of sparse hypercolumns.

For each image: every vector is assigned to its nearest centroid, residuals (x - c_k) are summed
per centroid, each centroid's block is L2-normalised (intra-normalisation; empty clusters stay
zero), and the whole vector is L2-normalised. Optional signed square-root (power)
normalisation is applied to the sums first. Batched in torch, on the GPU when there is one.

:class:`VladEncoder` is the one implementation: cross-validation encodes shard entries with it,
the final model and prediction encode the hypercolumns of image files with it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .maps import StoredTaps


def vlad(x: torch.Tensor, centroids: torch.Tensor, power_norm: bool = False) -> torch.Tensor:
    """(B, P, D) descriptors, (K, D) centroids -> (B, K * D) VLAD vectors."""
    b, _, d = x.shape
    k = centroids.shape[0]
    # Squared distances up to the per-vector constant |x|^2, which does not change the argmin.
    assign = (centroids.pow(2).sum(1) - 2 * (x @ centroids.T)).argmin(-1)  # (B, P)
    # Row (image b, centroid k) of the flattened sums receives every descriptor of b assigned to k.
    rows = (assign + k * torch.arange(b, device=x.device).unsqueeze(1)).reshape(-1)
    sums = torch.zeros(b * k, d, dtype=x.dtype, device=x.device).index_add_(0, rows, x.reshape(-1, d))
    return normalised_vlad(sums.view(b, k, d), assign, centroids, power_norm)


def normalised_vlad(sums: torch.Tensor, assign: torch.Tensor, centroids: torch.Tensor, power_norm: bool) -> torch.Tensor:
    """VLAD vectors (B, K * D) from the per-centroid descriptor sums (B, K, D) and the assignments (B, P)."""
    b, k, d = sums.shape
    rows = (assign + k * torch.arange(b, device=assign.device).unsqueeze(1)).reshape(-1)
    counts = torch.bincount(rows, minlength=b * k).view(b, k).to(sums.dtype)
    v = sums - counts.unsqueeze(-1) * centroids  # sum of residuals (x - c_k) per centroid
    if power_norm:
        v = v.sign() * v.abs().sqrt()
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # intra-normalisation
    v = v.reshape(b, k * d)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class VladEncoder:
    """An image representation: the VLAD vector of its hypercolumns over a fitted VisualDictionary.

    ``fit`` fits the dictionary (on training entries only); ``transform_taps`` encodes a batch of
    entries as a shard stores them (StoredTaps), without assembling their hypercolumns;
    ``transform_store`` streams entries of a HypercolumnStore through it with memory flat in their
    number; ``transform_extracted`` encodes a batch of the network pass (prediction). Cross-validation,
    the final model and prediction all encode through ``transform_taps``.
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

    def transform_taps(self, taps: StoredTaps) -> torch.Tensor:
        """A batch of entries' stored taps (float32, on `device`) -> (B, K * d) VLAD vectors.

        Equal to VLAD of the assembled hypercolumns (tested): with a PCA, each tap is projected at its
        own resolution and interpolated after; at full width, distances to the centroids and the
        per-centroid sums are computed on the maps.
        """
        if self._tensors is None:
            d = self.dictionary
            as_tensor = lambda a: None if a is None else torch.from_numpy(a).to(self.device)  # noqa: E731
            self._tensors = (as_tensor(d.centroids_), as_tensor(d.pca_mean_), as_tensor(d.pca_components_))
        centroids, mean, rows = self._tensors
        if rows is not None:
            # (x - mean) R^T as x R^T - mean R^T: the projection is linear in x, so it is applied to the maps.
            x = taps.at_pixels(taps.split(rows.T)) - mean @ rows.T
            return vlad(x, centroids, self.power_norm)
        dots = taps.at_pixels(taps.split(centroids.T))  # (B, P, K)
        # Squared distances up to the per-vector constant |x|^2, which does not change the argmin.
        assign = (centroids.pow(2).sum(1) - 2 * dots).argmin(-1)
        return normalised_vlad(taps.sum_over(assign, len(centroids)), assign, centroids, self.power_norm)

    def transform_store(self, store, entries, progress: bool = False, out=None):
        """VLAD vectors (N, K * d) float32 of (id, rotation) `entries` read from a HypercolumnStore.

        Written batch by batch into `out` (an array or an HDF5 dataset of that shape) when given,
        so that memory stays flat in N; else returned as a new array.
        """
        from tqdm import tqdm

        if out is None:
            out = np.empty((len(entries), self.dim), np.float32)
        # Batch buffers are allocated once and filled straight from the shards.
        taps = [np.empty((self.batch_size, *shape), np.float16) for shape in store.tap_shapes]
        coords = np.empty((self.batch_size, store.settings.n_pixels, 2), np.int16)
        bar = tqdm(total=len(entries), desc="VLAD", unit="img", disable=not progress)
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start:start + self.batch_size]
            for row, (image_id, rotation) in enumerate(chunk):
                store.read_taps_into(image_id, rotation, [t[row] for t in taps], coords[row])
            n = len(chunk)
            batch = StoredTaps([torch.from_numpy(t[:n]).to(self.device).float() for t in taps], coords[:n],
                               store.settings.image_size)
            out[start:start + n] = self.transform_taps(batch).cpu().numpy()
            bar.update(n)
        bar.close()
        return out

    def transform_extracted(self, batch, settings) -> np.ndarray:
        """(B, K * d) VLAD vectors of a batch of the network pass (hypercolumns.ExtractedBatch) made with
        `settings`: its float16 taps, encoded exactly as a shard's entries are."""
        taps = StoredTaps([torch.from_numpy(t).to(self.device).float() for t in batch.taps], batch.coords,
                          settings.image_size)
        return self.transform_taps(taps).cpu().numpy()

    def describe(self) -> dict:
        return {"representation": self.name, "power_norm": self.power_norm, "k": self.dictionary.k}

    def save(self, folder) -> dict:
        """The dictionary into `folder`; returns the description that load() takes back."""
        self.dictionary.save(Path(folder) / "dictionary.h5")
        return {**self.describe(), "dictionary_file": "dictionary.h5"}

    @classmethod
    def load(cls, folder, description: dict) -> "VladEncoder":
        from .dictionary import VisualDictionary

        return cls(VisualDictionary.load(Path(folder) / description["dictionary_file"]), description["power_norm"])
