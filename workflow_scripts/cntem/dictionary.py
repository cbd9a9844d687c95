"""The visual dictionary: K-means (FAISS) on hypercolumns of training entries only.

Optionally the hypercolumns are first projected by a PCA (with whitening) fitted on the same
training sample; the projection is kept with the centroids and applied by every encoder.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager

import faiss
import h5py
import numpy as np

from . import ActionableError

log = logging.getLogger(__name__)


def faiss_gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def sample_vectors(store, entries, sample_size: int, seed: int, view_share: float = 0.25, keep: int | None = None,
                   progress: bool = False) -> np.ndarray:
    """A seeded random sample of hypercolumn vectors from the views of `entries` ((id, rotation) pairs).

    Views are drawn at random as for `sample_size` vectors, each giving `view_share` of its sampled
    pixels (more when there are too few views to fill the sample), so that only ~ sample_size /
    (view_share * pixels) views are read: a view's deep taps are stored as whole maps, and reading
    every view for a few pixels each would read the whole store (at the paper's scale, 160 of ~6,000
    entries). Of those vectors only `keep` (default: all), drawn evenly from the same views, are
    assembled and returned: a K-means that uses fewer vectors than `sample_size` still sees as many images.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    views = [view for entry_views in store.entry_views(entries) for view in entry_views]
    pixels, features = store.view_shape
    per_view = min(pixels, max(-(-sample_size // len(views)), int(np.ceil(view_share * pixels))))
    chosen = np.sort(rng.choice(len(views), size=min(len(views), -(-sample_size // per_view)), replace=False))
    keep = min(keep or sample_size, sample_size)
    per_view = min(per_view, -(-keep // len(chosen)))
    sample = np.empty((len(chosen) * per_view, features), np.float32)
    for n, i in enumerate(tqdm(chosen, desc="sampling hypercolumns", unit="view", disable=not progress)):
        rows = np.sort(rng.choice(pixels, size=per_view, replace=False))
        store.read_hypercolumns_into(views[i], sample[n * per_view:(n + 1) * per_view], rows=rows)
    if len(sample) > keep:
        sample = sample[np.sort(rng.choice(len(sample), size=keep, replace=False))]
    return np.ascontiguousarray(sample)


def fit_pca(x: np.ndarray, dim: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """PCA on the training sample -> (mean, projection rows); whitening folds 1/sqrt(var) into rows."""
    from sklearn.decomposition import PCA

    if dim > min(x.shape):
        raise ActionableError(f"vlad.pca_dim={dim} exceeds the sample's rank bound {min(x.shape)}")
    # Many more vectors than features: the exact eigendecomposition of the D x D covariance is
    # faster than a randomized SVD of the sample (1.5 vs 2.7 s at 50,000 x 1472) and needs no seed.
    pca = PCA(n_components=dim, whiten=False, svd_solver="covariance_eigh").fit(x)
    rows = pca.components_.astype(np.float32)
    if whiten:
        rows = rows / np.sqrt(pca.explained_variance_.astype(np.float32) + 1e-8)[:, None]
    return pca.mean_.astype(np.float32), rows


@contextmanager
def native_stderr_logged(logger: logging.Logger):
    """What compiled code (FAISS's C++) writes to the process's stderr meanwhile, logged as `logger`'s warnings:
    into the rule's log, not only the terminal."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if line.strip():
                    logger.warning("faiss: %s", line.strip())


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
    with native_stderr_logged(log):
        kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
    return kmeans.centroids.copy(), float(kmeans.obj[-1])


class VisualDictionary:
    """K visual words over hypercolumns: a seeded sample of training vectors, an optional PCA, K-means.

    ``fit(store, entries)`` sees only the given (training) entries and records their ids
    (``fit_ids_``, read by the leakage check). After fitting: ``centroids_`` (K, d), and with a PCA
    ``pca_mean_`` (D,) and ``pca_components_`` (d, D), rows already divided by sqrt(variance) when
    whitened. `device` "auto" or "cuda[:N]" uses FAISS's GPU K-means when this faiss build sees a GPU.
    """

    def __init__(self, k: int, sample_size: int = 200000, niter: int = 25, nredo: int = 1,
                 max_points_per_centroid: int = 256, seed: int = 1234, pca_dim: int | None = None,
                 pca_whiten: bool = False, device: str = "auto"):
        self.k, self.sample_size, self.niter, self.nredo = k, sample_size, niter, nredo
        self.max_points_per_centroid, self.seed = max_points_per_centroid, seed
        self.pca_dim, self.pca_whiten, self.device = pca_dim, pca_whiten, device
        self.centroids_ = self.pca_mean_ = self.pca_components_ = None
        self.fit_ids_, self.objective_, self.n_vectors_, self.faiss_gpu_ = [], None, 0, False

    def fit(self, store, entries, progress: bool = False) -> "VisualDictionary":
        """Fit on the hypercolumns of `entries` ((id, rotation) pairs) read from a HypercolumnStore."""
        sample = sample_vectors(store, entries, self.sample_size, self.seed, keep=self.vectors_used(),
                                progress=progress)
        self.fit_ids_ = sorted({image_id for image_id, _ in entries})
        return self.fit_vectors(sample)

    def vectors_used(self) -> int:
        """How many of the `sample_size` sampled vectors the fit uses: a PCA all of them, FAISS K-means at
        most K x max_points_per_centroid (it would subsample any more), so only those are assembled."""
        return self.sample_size if self.pca_dim else min(self.sample_size, self.k * self.max_points_per_centroid)

    def fit_vectors(self, sample: np.ndarray) -> "VisualDictionary":
        """Fit on an (n, D) float32 sample of hypercolumn vectors."""
        use_gpu = self.device != "cpu" and faiss_gpu_count() > 0
        if self.device.startswith("cuda") and not use_gpu:
            log.warning("CUDA requested but this faiss build has no GPU support: K-means runs on the CPU")
        if self.pca_dim:
            self.pca_mean_, self.pca_components_ = fit_pca(sample, self.pca_dim, self.pca_whiten)
            sample = self.project(sample)
        self.centroids_, self.objective_ = fit_kmeans(sample, self.k, self.niter, self.seed,
                                                      self.max_points_per_centroid, use_gpu, self.nredo)
        self.n_vectors_, self.faiss_gpu_ = len(sample), use_gpu
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        """Hypercolumns (n, D) into the dictionary's space (the PCA, when there is one)."""
        return x if self.pca_components_ is None else (x - self.pca_mean_) @ self.pca_components_.T

    @property
    def dim(self) -> int:
        """Width of one visual word (the PCA's when there is one)."""
        return self.centroids_.shape[1]

    def describe(self) -> dict:
        return {"k": self.k, "sample_size": self.sample_size, "niter": self.niter, "nredo": self.nredo,
                "max_points_per_centroid": self.max_points_per_centroid, "seed": self.seed,
                "pca_dim": self.pca_dim, "pca_whiten": self.pca_whiten, "objective": self.objective_,
                "n_vectors": self.n_vectors_, "faiss_gpu": self.faiss_gpu_}

    def save(self, path) -> None:
        with h5py.File(path, "w") as h5:
            h5.create_dataset("centroids", data=self.centroids_)
            if self.pca_components_ is not None:
                h5.create_dataset("pca_mean", data=self.pca_mean_)
                h5.create_dataset("pca_components", data=self.pca_components_)
            h5.create_dataset("fit_ids", data=np.array(self.fit_ids_, dtype=h5py.string_dtype()))
            h5.attrs["meta"] = json.dumps(self.describe())

    @classmethod
    def load(cls, path) -> "VisualDictionary":
        with h5py.File(path, "r") as h5:
            meta = json.loads(h5.attrs["meta"])
            dictionary = cls(**{key: meta[key] for key in ("k", "sample_size", "niter", "nredo",
                                                            "max_points_per_centroid", "seed", "pca_dim",
                                                            "pca_whiten")})
            dictionary.centroids_ = h5["centroids"][()]
            if "pca_mean" in h5:
                dictionary.pca_mean_, dictionary.pca_components_ = h5["pca_mean"][()], h5["pca_components"][()]
            dictionary.fit_ids_ = list(h5["fit_ids"].asstr()[()])
            dictionary.objective_, dictionary.n_vectors_ = meta["objective"], meta["n_vectors"]
            dictionary.faiss_gpu_ = meta["faiss_gpu"]
        return dictionary
