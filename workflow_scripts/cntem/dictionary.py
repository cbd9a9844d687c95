"""The visual dictionary: K-means (FAISS) on hypercolumns of one fold's training entries.

Optionally the hypercolumns are first projected by a PCA (with whitening) fitted on the same
training sample; the projection is stored with the centroids and applied again by the encoder.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import faiss
import h5py
import numpy as np

from . import ActionableError

log = logging.getLogger(__name__)


def faiss_gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@dataclass
class Dictionary:
    centroids: np.ndarray  # (K, d) float32 in the (projected) hypercolumn space
    pca_mean: np.ndarray | None = None  # (D,)
    pca_components: np.ndarray | None = None  # (d, D), rows already divided by sqrt(var) if whitened
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.centroids)

    def save(self, path) -> None:
        with h5py.File(path, "w") as h5:
            h5.create_dataset("centroids", data=self.centroids)
            if self.pca_components is not None:
                h5.create_dataset("pca_mean", data=self.pca_mean)
                h5.create_dataset("pca_components", data=self.pca_components)
            fit_ids = self.meta.get("fit_ids", [])
            h5.create_dataset("fit_ids", data=np.array(fit_ids, dtype=h5py.string_dtype()))
            h5.attrs["meta"] = json.dumps({k: v for k, v in self.meta.items() if k != "fit_ids"})

    @classmethod
    def load(cls, path) -> "Dictionary":
        with h5py.File(path, "r") as h5:
            meta = json.loads(h5.attrs["meta"])
            meta["fit_ids"] = list(h5["fit_ids"].asstr()[()])
            pca = ("pca_mean" in h5) and (h5["pca_mean"][()], h5["pca_components"][()])
            return cls(h5["centroids"][()], *(pca or (None, None)), meta=meta)


def sample_vectors(store, entries, sample_size: int, seed: int, progress: bool = False) -> np.ndarray:
    """An even random sample of hypercolumn vectors over `entries` ((id, rotation) pairs)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    per_entry = -(-sample_size // len(entries))
    parts, h = [], np.empty(store.entry_shape, np.float16)
    for image_id, rotation in tqdm(entries, desc="sampling hypercolumns", unit="img", disable=not progress):
        store.read_hypercolumns_into(image_id, rotation, h)
        pick = np.sort(rng.choice(len(h), size=min(per_entry, len(h)), replace=False))
        parts.append(h[pick].astype(np.float32))
    sample = np.concatenate(parts)
    if len(sample) > sample_size:
        sample = sample[np.sort(rng.choice(len(sample), size=sample_size, replace=False))]
    return np.ascontiguousarray(sample)


def fit_pca(x: np.ndarray, dim: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """PCA on the training sample -> (mean, projection rows); whitening folds 1/sqrt(var) into rows."""
    from sklearn.decomposition import PCA

    if dim > min(x.shape):
        raise ValueError(f"vlad.pca_dim={dim} exceeds the sample's rank bound {min(x.shape)}")
    # Many more vectors than features: the exact eigendecomposition of the D x D covariance is
    # faster than a randomized SVD of the sample (1.5 vs 2.7 s at 50,000 x 1472) and needs no seed.
    pca = PCA(n_components=dim, whiten=False, svd_solver="covariance_eigh").fit(x)
    rows = pca.components_.astype(np.float32)
    if whiten:
        rows = rows / np.sqrt(pca.explained_variance_.astype(np.float32) + 1e-8)[:, None]
    return pca.mean_.astype(np.float32), rows


def project(x: np.ndarray, mean: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray:
    return x if rows is None else (x - mean) @ rows.T


def fit_kmeans(x: np.ndarray, k: int, niter: int, seed: int, max_points_per_centroid: int,
               use_gpu: bool, nredo: int = 1) -> tuple[np.ndarray, float]:
    """FAISS K-means (GPU index when `use_gpu`) -> (centroids (k, d), final objective).

    `nredo` > 1 keeps the best of that many seeded restarts (K-means has local minima).
    """
    if len(x) < k:
        raise ActionableError(f"K={k} exceeds the {len(x)} training hypercolumn vectors of this fold; lower K, "
                              "raise dictionary.sample_size or add images")
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, gpu=use_gpu, verbose=False,
                          max_points_per_centroid=max_points_per_centroid, spherical=False)
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return kmeans.centroids.copy(), float(kmeans.obj[-1])


def build_dictionary(store, train_entries, k: int, cfg: dict, vlad_cfg: dict, device: str = "auto",
                     progress: bool = False) -> Dictionary:
    """Sample -> optional PCA -> K-means, all on the given training entries only.

    `device` auto or cuda[:N] uses FAISS's GPU K-means when this faiss build sees a GPU.
    """
    use_gpu = device != "cpu" and faiss_gpu_count() > 0
    if device.startswith("cuda") and not use_gpu:
        log.warning("CUDA requested but this faiss build has no GPU support: K-means runs on the CPU "
                    "(pip install faiss-gpu-cu12 for the GPU index)")
    sample = sample_vectors(store, train_entries, cfg["sample_size"], cfg["seed"], progress)
    mean = rows = None
    if vlad_cfg.get("pca_dim"):
        mean, rows = fit_pca(sample, vlad_cfg["pca_dim"], vlad_cfg.get("pca_whiten", False))
        sample = project(sample, mean, rows)
    centroids, objective = fit_kmeans(sample, k, cfg["niter"], cfg["seed"], cfg["max_points_per_centroid"], use_gpu,
                                      cfg.get("nredo", 1))
    meta = {"k": k, "objective": objective, "n_vectors": len(sample), "faiss_gpu": use_gpu,
            "fit_ids": sorted({i for i, _ in train_entries}), **{f"dictionary_{k_}": v for k_, v in cfg.items()},
            "pca_dim": vlad_cfg.get("pca_dim"), "pca_whiten": vlad_cfg.get("pca_whiten", False)}
    return Dictionary(centroids, mean, rows, meta)
