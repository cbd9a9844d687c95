"""HDF5 hypercolumn shards: which shard an image goes to, how much disk they need, and reading them.

Kept free of torch so that the many small learning jobs start fast.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np

from . import ActionableError

log = logging.getLogger(__name__)


class DiskSpaceError(ActionableError, OSError):
    """The volume cannot hold the shards; raised before any extraction."""


def assign_shard(image_id: str, n_shards: int) -> int:
    """Shard of an image: a stable hash of its id, so adding images never moves existing ones.

    SHA-256 rather than CRC32: CRC is linear, so ids that differ in one digit crowd into few shards.
    """
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little") % n_shards


def shard_manifest(images: list[dict], plans: list[list[dict]], n_shards: int) -> list[dict]:
    """The (image, rotation) entries to extract, each with its path and shard.

    A class that any plan augments gets all three rotations of every image extracted, so the
    manifest (and every shard's content) depends on class membership, not on fold assignment:
    adding images re-extracts only the shards those images fall into.
    """
    from .folds import ROTATIONS

    path_of = {r["id"]: r["path"] for r in images}
    rotations = {}
    for plan in plans:
        augmented = {r["class"] for r in plan if int(r["rotation"]) != 0}
        for r in plan:
            entry_rotations = rotations.setdefault(r["id"], {0})
            if r["class"] in augmented:
                entry_rotations.update(ROTATIONS)
    return [{"id": i, "rotation": rot, "path": path_of[i], "shard": assign_shard(i, n_shards)}
            for i in sorted(rotations) for rot in sorted(rotations[i])]


MANIFEST_COLUMNS = ["id", "rotation", "path", "shard"]


def shard_bytes(n_entries: int, settings) -> int:
    """Bytes the shards of `n_entries` entries take: float16 hypercolumns plus int16 coordinates."""
    return n_entries * settings.n_pixels * (settings.n_features * 2 + 4)


def check_disk(out_dir, needed: int) -> None:
    """Print what the shards need and stop, before any extraction, if the volume lacks room."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    log.info("hypercolumns need %.2f GB on disk (%.1f GB free in %s)", needed / 1e9, free / 1e9, out_dir)
    if needed * 1.05 > free:
        raise DiskSpaceError(f"not enough disk for the hypercolumn shards in {out_dir}: need {needed / 1e9:.1f} GB, "
                      f"{free / 1e9:.1f} GB free. Free space, lower hypercolumns.density or image_size, "
                      "or run from a larger volume")


class HypercolumnStore:
    """Read access to the entries of many shards by (id, rotation)."""

    def __init__(self, shard_paths):
        self.paths = [str(p) for p in shard_paths]
        self.index, self.attrs = {}, None
        for s, path in enumerate(self.paths):
            with h5py.File(path, "r") as h5:
                ids = h5["ids"].asstr()[()]
                rots = h5["rotations"][()]
                attrs = {k: h5.attrs[k] for k in ("weights_sha256", "taps", "density", "image_size", "resize", "seed")}
                if self.attrs is None:
                    self.attrs = {**dict(h5.attrs)}
                elif any(self.attrs[k] != v for k, v in attrs.items()):
                    raise ValueError(f"{path} was extracted with other settings than {self.paths[0]}; "
                                     "delete the stale shards and rerun")
            for row, (i, r) in enumerate(zip(ids, rots)):
                self.index[(str(i), int(r))] = (s, row)
        self._files = {}

    def _file(self, s):
        if s not in self._files:
            self._files[s] = h5py.File(self.paths[s], "r")
        return self._files[s]

    def locate(self, image_id: str, rotation: int):
        try:
            return self.index[(image_id, int(rotation))]
        except KeyError:
            raise KeyError(f"no hypercolumns for {image_id} rotated {rotation}; rerun the extraction") from None

    def hypercolumns(self, image_id: str, rotation: int = 0) -> np.ndarray:
        s, row = self.locate(image_id, rotation)
        return self._file(s)["hcol"][row]

    @property
    def entry_shape(self) -> tuple[int, int]:
        """(sampled pixels, features) of every entry."""
        return tuple(self._file(0)["hcol"].shape[1:])

    def read_hypercolumns_into(self, image_id: str, rotation: int, out: np.ndarray) -> None:
        """Like hypercolumns(), into a caller's (P, D) float16 buffer (no fresh 15 MB array per entry)."""
        s, row = self.locate(image_id, rotation)
        self._file(s)["hcol"].read_direct(out, source_sel=np.s_[row])

    def coords(self, image_id: str, rotation: int = 0) -> np.ndarray:
        s, row = self.locate(image_id, rotation)
        return self._file(s)["coords"][row]

    def pooled(self, entries) -> np.ndarray:
        rows = []
        for image_id, rotation in entries:
            s, row = self.locate(image_id, rotation)
            rows.append(self._file(s)["pooled"][row])
        return np.stack(rows)

    def extraction_settings(self):
        """The ExtractionSettings every shard of this store was made with."""
        from .features import ExtractionSettings

        a = self.attrs
        return ExtractionSettings(tuple(json.loads(a["taps"])), float(a["density"]), int(a["image_size"]),
                                  str(a["resize"]), int(a["seed"]))

    def weights_identity(self) -> dict:
        """Name, tensor sha256, random flag and input convention of the weights the shards came from."""
        a = self.attrs
        return {"name": str(a["weights"]), "sha256": str(a["weights_sha256"]), "random": bool(a["weights_random"]),
                "preprocess": json.loads(a["preprocess"])}

    def close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
