"""HDF5 hypercolumn shards: which shard an image goes to, how much disk they need, and reading them.

Kept free of torch so that the many small learning jobs start fast.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
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


# Views (network inputs) an automatic shard holds at most: ~40 s of network on 2 CPU cores, against a few
# seconds of job start-up (Python, torch, the weights). A squashed entry is one view.
VIEWS_PER_SHARD = 512


def shard_count(setting: int | str, n_views: int) -> int:
    """The number of shards: `setting` itself, or for "auto" the smallest power of two giving shards of
    about VIEWS_PER_SHARD views or fewer. Powers of two change rarely as images are added (each
    change re-extracts every shard); a fixed number never moves an image."""
    if setting != "auto":
        return int(setting)
    return 1 << max(0, math.ceil(math.log2(max(n_views, 1) / VIEWS_PER_SHARD)))


def shard_manifest(images: list[dict], plans: list[list[dict]], shards: int | str, settings) -> list[dict]:
    """The (image, rotation) entries to extract, each with its path, shard and number of views.

    A class that any plan augments gets all three rotations of every image extracted, so the
    manifest (and every shard's content) depends on class membership, not on fold assignment:
    adding images re-extracts only the shards those images fall into. `shards` is a count or "auto"
    (shard_count) of about VIEWS_PER_SHARD views each; `settings` (ExtractionSettings) says how many
    views an image of its width and height has.
    """
    from .folds import ROTATIONS

    path_of = {r["id"]: r["path"] for r in images}
    views_of = {r["id"]: len(settings.view_origins(int(r["width"]), int(r["height"]))) for r in images}
    rotations = {}
    for plan in plans:
        augmented = {r["class"] for r in plan if int(r["rotation"]) != 0}
        for r in plan:
            entry_rotations = rotations.setdefault(r["id"], {0})
            if r["class"] in augmented:
                entry_rotations.update(ROTATIONS)
    n_shards = shard_count(shards, sum(len(r) * views_of[i] for i, r in rotations.items()))
    return [{"id": i, "rotation": rot, "path": path_of[i], "shard": assign_shard(i, n_shards), "views": views_of[i]}
            for i in sorted(rotations) for rot in sorted(rotations[i])]


MANIFEST_COLUMNS = ["id", "rotation", "path", "shard", "views"]


def shard_bytes(n_entries: int, n_views: int, settings) -> int:
    """Bytes the shards of `n_entries` entries with `n_views` views in all take: float16 taps and int16
    coordinates per view, the float32 pooled hypercolumn per entry (the baseline's pooled features, 2 or
    16 kB an entry, are left out)."""
    return n_views * (settings.stored_values() * 2 + settings.n_pixels * 4) + n_entries * 2 * settings.n_features * 4


def format_bytes(n: float) -> str:
    """A size in the largest of B, kB, MB, GB, TB that keeps it at 1 or more, to 3 significant digits."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def check_disk(out_dir, needed: int) -> None:
    """Print what the shards need and stop, before any extraction, if the volume lacks room."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    log.info("hypercolumns need %s on disk (%s free in %s)", format_bytes(needed), format_bytes(free), out_dir)
    if needed * 1.05 > free:
        raise DiskSpaceError(f"not enough disk for the hypercolumn shards in {out_dir}: need {format_bytes(needed)}, "
                             f"{format_bytes(free)} free. Free {format_bytes(needed * 1.05 - free)} or more, lower "
                             "hypercolumns.density or image_size, or run from a larger volume")


def disk_full_error(path, exc: OSError) -> DiskSpaceError:
    """The message for a write to `path` that filled its file system: where, how much is free, what to do."""
    folder = Path(path).resolve().parent
    mount = next(p for p in (folder, *folder.parents) if p.is_mount())
    return DiskSpaceError(f"{path}: the disk filled up while writing it ({exc.strerror or exc}); the partial file was "
                          f"removed. The file system of {mount} has {format_bytes(shutil.disk_usage(folder).free)} "
                          "free now: free space there (results/logs/hypercolumns/<input mode>/manifest.log says what "
                          "the shards need), then run the same command again; finished shards are kept")


# Version 4 stores views (an entry has one or more: input modes tiles and native) and the input mode;
# version 3 added each entry's pooled hypercolumn; version 2 kept the deep taps as feature maps and
# interpolates them on read (~4.6 MB an entry at the paper's settings); version 1 stored every tap's
# columns (14.8 MB an entry).
SHARD_FORMAT = "cntem-shard-4"


class StaleShardError(ActionableError, ValueError):
    """A shard written by another version of the format."""


def bilinear_corners(coords: np.ndarray, side: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The four cells of a side x side map that each (row, col) input pixel mixes, and their weights.

    `coords` (..., 2) are pixels of a size x size input; returns flat cell indices (..., 4) int64 and
    weights (..., 4) float32. Mixing a map's cells so equals upsampling it to size x size (bilinear,
    align_corners=False, edges clamped, as torch's interpolate) and reading the pixels.
    """
    def axis(pixels):
        source = np.clip((pixels.astype(np.float64) + 0.5) * (side / size) - 0.5, 0, side - 1)
        low = np.floor(source).astype(np.int64)
        return low, np.minimum(low + 1, side - 1), source - low

    (r0, r1, wr), (c0, c1, wc) = axis(coords[..., 0]), axis(coords[..., 1])
    cells = np.stack([r0 * side + c0, r0 * side + c1, r1 * side + c0, r1 * side + c1], -1)
    weights = np.stack([(1 - wr) * (1 - wc), (1 - wr) * wc, wr * (1 - wc), wr * wc], -1)
    return cells, weights.astype(np.float32)


def bilinear_matrix(coords: np.ndarray, side: int, size: int):
    """Sparse (P, side * side) matrix taking a side x side map's values to the (row, col) input pixels `coords`."""
    from scipy.sparse import csr_matrix

    cells, weights = bilinear_corners(coords, side, size)
    rows = np.repeat(np.arange(len(coords)), 4)
    return csr_matrix((weights.ravel(), (rows, cells.ravel())), shape=(len(coords), side * side))


def assemble_hypercolumns(taps: list[np.ndarray], coords: np.ndarray, size: int, out: np.ndarray) -> None:
    """Hypercolumns (P, D) into `out` from one entry's stored taps.

    `taps` holds, per tap in order, either its columns at the sampled pixels (P, C) or its whole
    feature map (side, side, C), which is interpolated at `coords` (P, 2) of a size x size input.
    """
    offset = 0
    for tap in taps:
        channels = tap.shape[-1]
        if tap.ndim == 2:
            out[:, offset:offset + channels] = tap
        else:
            side = tap.shape[0]
            out[:, offset:offset + channels] = bilinear_matrix(coords, side, size) @ \
                tap.reshape(side * side, channels).astype(np.float32)
        offset += channels


class HypercolumnStore:
    """Read access to the entries of many shards by (id, rotation), and to their views.

    An entry has one or more views (input modes tiles and native), stored as consecutive rows; a view is
    located by (shard, row). Encoders read views (``entry_views``, ``read_taps_into``,
    ``read_hypercolumns_into``); the pooled features are one row per entry. `bytes_read` counts the stored
    bytes read so far (coordinates and taps), so that a job can say how much of the shards it needed.
    """

    def __init__(self, shard_paths):
        self.paths = [str(p) for p in shard_paths]
        self.index, self.attrs = {}, None
        for s, path in enumerate(self.paths):
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("format") != SHARD_FORMAT:
                    raise StaleShardError(
                        f"{path} holds hypercolumns in an older format than {SHARD_FORMAT}; delete the shards "
                        f"(rm {Path(path).parent}/shard-*.h5) and rerun to extract them again")
                ids = h5["ids"].asstr()[()]
                rots = h5["rotations"][()]
                views = h5["views"][()]
                attrs = {k: h5.attrs[k] for k in ("weights_sha256", "taps", "density", "image_size", "input_mode",
                                                  "max_side", "seed")}
                if self.attrs is None:
                    self.attrs = {**dict(h5.attrs)}
                elif any(self.attrs[k] != v for k, v in attrs.items()):
                    raise ValueError(f"{path} was extracted with other settings than {self.paths[0]}; "
                                     "delete the stale shards and rerun")
            first_views = np.concatenate([[0], np.cumsum(views)])
            for row, (i, r) in enumerate(zip(ids, rots)):
                self.index[(str(i), int(r))] = (s, row, int(first_views[row]), int(views[row]))
        self.settings = self.extraction_settings()
        self.taps = list(self.settings.taps)
        self._files, self._scratch, self.bytes_read = {}, None, 0

    def _file(self, s):
        if s not in self._files:
            self._files[s] = h5py.File(self.paths[s], "r")
        return self._files[s]

    def locate(self, image_id: str, rotation: int) -> tuple[int, int, int, int]:
        """(shard, entry row, first view row, number of views) of an entry."""
        try:
            return self.index[(image_id, int(rotation))]
        except KeyError:
            raise KeyError(f"no hypercolumns for {image_id} rotated {rotation}; rerun the extraction") from None

    def entry_views(self, entries) -> list[list[tuple[int, int]]]:
        """Per (id, rotation) entry, its views as (shard, row) locators."""
        located = [self.locate(image_id, rotation) for image_id, rotation in entries]
        return [[(s, first + v) for v in range(n)] for s, _, first, n in located]

    @property
    def view_shape(self) -> tuple[int, int]:
        """(sampled pixels, features) of every view."""
        return self.settings.n_pixels, self.settings.n_features

    def read_hypercolumns_into(self, view: tuple[int, int], out: np.ndarray, rows=None) -> None:
        """A view's hypercolumns (P, D), or only its sampled pixels `rows`, into a caller's buffer.

        Each tap is read whole into a buffer kept between calls (no fresh arrays per view); maps
        are interpolated at the pixels wanted.
        """
        s, row = view
        h5 = self._file(s)
        if self._scratch is None:
            self._scratch = [np.empty(h5[f"taps/{t}"].shape[1:], np.float16) for t in self.taps]
        coords = h5["coords"][row]
        self.bytes_read += coords.nbytes
        taps = []
        for name, buffer in zip(self.taps, self._scratch):
            h5[f"taps/{name}"].read_direct(buffer, source_sel=np.s_[row])
            self.bytes_read += buffer.nbytes
            taps.append(buffer if rows is None or buffer.ndim == 3 else buffer[rows])
        assemble_hypercolumns(taps, coords if rows is None else coords[rows], self.settings.image_size, out)

    @property
    def tap_shapes(self) -> list[tuple[int, ...]]:
        """Per tap, the shape one view stores: (P, C) columns or a (side, side, C) map."""
        h5 = self._file(0)
        return [h5[f"taps/{t}"].shape[1:] for t in self.taps]

    def read_taps_into(self, view: tuple[int, int], taps_out: list[np.ndarray], coords_out: np.ndarray) -> None:
        """A view's stored taps and pixel coordinates, as extraction wrote them, into the caller's buffers.

        Nothing is interpolated: an encoder that is linear in the hypercolumns works on the maps
        themselves (VladEncoder.transform_taps), which is cheaper than assembling every column.
        """
        s, row = view
        h5 = self._file(s)
        h5["coords"].read_direct(coords_out, source_sel=np.s_[row])
        for name, buffer in zip(self.taps, taps_out):
            h5[f"taps/{name}"].read_direct(buffer, source_sel=np.s_[row])
            self.bytes_read += buffer.nbytes
        self.bytes_read += coords_out.nbytes

    def hypercolumns(self, image_id: str, rotation: int = 0) -> np.ndarray:
        """An entry's (V x P, D) float16 hypercolumns, view after view, in a new array."""
        views = self.entry_views([(image_id, rotation)])[0]
        pixels, features = self.view_shape
        out = np.empty((len(views) * pixels, features), np.float16)
        for v, view in enumerate(views):
            self.read_hypercolumns_into(view, out[v * pixels:(v + 1) * pixels])
        return out

    def total_bytes(self) -> int:
        """Size of the store's shard files."""
        return sum(Path(p).stat().st_size for p in self.paths)

    def coords(self, image_id: str, rotation: int = 0) -> np.ndarray:
        """An entry's sampled pixels (V, P, 2), each view's in that view's own input coordinates."""
        s, _, first, n = self.locate(image_id, rotation)
        return self._file(s)["coords"][first:first + n]

    def pooled(self, entries) -> np.ndarray:
        """The baseline's features (N, 512 or 4096) of (id, rotation) `entries`: pool5's global average or fc7
        (over all of an entry's views)."""
        return self._entry_rows("pooled", entries)

    def pooled_hypercolumns(self, entries) -> np.ndarray:
        """The pooled hypercolumns (N, 2 x features) of (id, rotation) `entries`: the global mean of every
        tapped map, then the global max of every tapped map, over all of an entry's views
        (hypercolumns.pool_feature_maps, pool_over_views)."""
        return self._entry_rows("pooled_hypercolumns", entries)

    def _entry_rows(self, dataset: str, entries) -> np.ndarray:
        rows = []
        for image_id, rotation in entries:
            s, row, _, _ = self.locate(image_id, rotation)
            rows.append(self._file(s)[dataset][row])
        return np.stack(rows) if rows else np.empty((0, self._file(0)[dataset].shape[1]), np.float32)

    def extraction_settings(self):
        """The ExtractionSettings every shard of this store was made with."""
        from .features import ExtractionSettings

        a = self.attrs
        return ExtractionSettings(tuple(json.loads(a["taps"])), float(a["density"]), int(a["image_size"]),
                                  str(a["input_mode"]), int(a["max_side"]), int(a["seed"]))

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
