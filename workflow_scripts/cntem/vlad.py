"""VLAD encoding (Jegou et al. 2010; Arandjelovic & Zisserman 2013) of sparse hypercolumns.

For each image: every vector is assigned to its nearest centroid, residuals (x - c_k) are summed
per centroid, each centroid's block is L2-normalised (intra-normalisation; empty clusters stay
zero), and the whole vector is L2-normalised. Optional signed square-root (power)
normalisation is applied to the sums first. Batched in torch, on the GPU when there is one. An image of
several views (input modes tiles and native) has one VLAD vector of the descriptors of all its views: the
views' sums and counts are added before normalisation.

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
    return normalised_vlad(*vlad_sums(x, centroids), centroids, power_norm)


def nearest_centroid(dots: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Assignments (B, P) from the descriptors' dot products with the centroids (B, P, K)."""
    # Squared distances up to the per-vector constant |x|^2, which does not change the argmin.
    return (centroids.pow(2).sum(1) - 2 * dots).argmin(-1)


def assignment_counts(assign: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K): how many of each row's descriptors each centroid received."""
    b = assign.shape[0]
    rows = (assign + k * torch.arange(b, device=assign.device).unsqueeze(1)).reshape(-1)
    return torch.bincount(rows, minlength=b * k).view(b, k)


def vlad_sums(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P, D) descriptors -> per centroid, the sum of the descriptors assigned to it (B, K, D) and their count (B, K)."""
    b, _, d = x.shape
    k = centroids.shape[0]
    assign = nearest_centroid(x @ centroids.T, centroids)
    # Row (image b, centroid k) of the flattened sums receives every descriptor of b assigned to k.
    rows = (assign + k * torch.arange(b, device=x.device).unsqueeze(1)).reshape(-1)
    sums = torch.zeros(b * k, d, dtype=x.dtype, device=x.device).index_add_(0, rows, x.reshape(-1, d))
    return sums.view(b, k, d), assignment_counts(assign, k)


def normalised_vlad(sums: torch.Tensor, counts: torch.Tensor, centroids: torch.Tensor, power_norm: bool) -> torch.Tensor:
    """VLAD vectors (B, K * D) from the per-centroid descriptor sums (B, K, D) and counts (B, K)."""
    b, k, d = sums.shape
    v = sums - counts.to(sums.dtype).unsqueeze(-1) * centroids  # sum of residuals (x - c_k) per centroid
    if power_norm:
        v = v.sign() * v.abs().sqrt()
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # intra-normalisation
    v = v.reshape(b, k * d)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def sum_views(per_view: torch.Tensor, views) -> torch.Tensor:
    """Rows of consecutive views added up per entry: (V, ...) -> (B, ...) for `views` (B,) counts."""
    if len(views) == len(per_view):
        return per_view
    owner = torch.repeat_interleave(torch.arange(len(views), device=per_view.device),
                                    torch.as_tensor(np.asarray(views), device=per_view.device))
    return torch.zeros((len(views), *per_view.shape[1:]), dtype=per_view.dtype,
                       device=per_view.device).index_add_(0, owner, per_view)


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

    def transform_taps(self, taps: StoredTaps, views=None) -> torch.Tensor:
        """A batch of stored views (float32, on `device`) -> (B, K * d) VLAD vectors, one per entry of `views`
        consecutive views each (default: one view an entry)."""
        sums, counts = self.view_sums(taps)
        if views is not None:
            sums, counts = sum_views(sums, views), sum_views(counts, views)
        return normalised_vlad(sums, counts, self._tensors[0], self.power_norm)

    def view_sums(self, taps: StoredTaps) -> tuple[torch.Tensor, torch.Tensor]:
        """Per view of the batch, the per-centroid sums (V, K, d) and counts (V, K) of its descriptors.

        Equal to those of the assembled hypercolumns (tested): with a PCA, each tap is projected at its
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
            return vlad_sums(taps.at_pixels(taps.split(rows.T)) - mean @ rows.T, centroids)
        assign = nearest_centroid(taps.at_pixels(taps.split(centroids.T)), centroids)  # dots (V, P, K)
        return taps.sum_over(assign, len(centroids)), assignment_counts(assign, len(centroids))

    def transform_store(self, store, entries, progress: bool = False, out=None):
        """VLAD vectors (N, K * d) float32 of (id, rotation) `entries` read from a HypercolumnStore.

        Views are read batch_size at a time, whatever entries they belong to: an entry's sums and counts
        are added up over its views, and its vector is normalised once its last view is in. Vectors are
        written into `out` (an array or an HDF5 dataset of that shape) as entries complete when given, so
        that memory stays flat in N; else returned as a new array.
        """
        from tqdm import tqdm

        if out is None:
            out = np.empty((len(entries), self.dim), np.float32)
        views = [(n, view) for n, entry_views in enumerate(store.entry_views(entries)) for view in entry_views]
        ends_entry = [i + 1 == len(views) or views[i + 1][0] != entry for i, (entry, _) in enumerate(views)]
        # Batch buffers are allocated once and filled straight from the shards.
        taps = [np.empty((self.batch_size, *shape), np.float16) for shape in store.tap_shapes]
        coords = np.empty((self.batch_size, store.settings.n_pixels, 2), np.int16)
        running = None  # (sums, counts) of the views read so far of an entry not yet complete
        bar = tqdm(total=len(entries), desc="VLAD", unit="img", disable=not progress)
        for start in range(0, len(views), self.batch_size):
            chunk = views[start:start + self.batch_size]
            for row, (_, view) in enumerate(chunk):
                store.read_taps_into(view, [t[row] for t in taps], coords[row])
            n = len(chunk)
            batch = StoredTaps([torch.from_numpy(t[:n]).to(self.device).float() for t in taps], coords[:n],
                               store.settings.image_size)
            sums, counts = self.view_sums(batch)
            complete = []  # (entry, sums, counts) of the entries whose last view is in this batch
            for row, (entry, _) in enumerate(chunk):
                running = (sums[row], counts[row]) if running is None else \
                    (running[0] + sums[row], running[1] + counts[row])
                if ends_entry[start + row]:
                    complete.append((entry, *running))
                    running = None
            if complete:  # consecutive entries
                vectors = normalised_vlad(torch.stack([c[1] for c in complete]), torch.stack([c[2] for c in complete]),
                                          self._tensors[0], self.power_norm)
                out[complete[0][0]:complete[-1][0] + 1] = vectors.cpu().numpy()
                bar.update(len(complete))
        bar.close()
        return out

    def transform_extracted(self, batch, settings) -> np.ndarray:
        """(B, K * d) VLAD vectors of a batch of the network pass (hypercolumns.ExtractedBatch) made with
        `settings`: its float16 taps, encoded exactly as a shard's entries are."""
        taps = StoredTaps([torch.from_numpy(t).to(self.device).float() for t in batch.taps], batch.coords,
                          settings.image_size)
        return self.transform_taps(taps, batch.views).cpu().numpy()

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
