"""HDF5 hypercolumn shards: which shard an image goes to, how much disk they need, and reading them.

Kept free of torch so that the many small learning jobs start fast.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import ActionableError

log = logging.getLogger(__name__)


class DiskSpaceError(ActionableError, OSError):
    """The volume cannot hold the shards; raised before any extraction."""


# Views (network inputs) an automatic shard holds at most: ~40 s of network on 2 CPU cores, against a few
# seconds of job start-up (Python, torch, the weights). A squashed entry is one view.
VIEWS_PER_SHARD = 512


def new_shard_count(setting: int | str, n_views: int) -> int:
    """How many shards the entries not extracted yet go to: `setting` itself, or for "auto" one per
    VIEWS_PER_SHARD views of those entries."""
    if setting != "auto":
        return int(setting)
    return max(1, math.ceil(n_views / VIEWS_PER_SHARD))


def shard_number(path) -> int:
    """The number of a shard file shard-NNN.h5."""
    return int(Path(path).name.removeprefix("shard-").removesuffix(".h5"))


@dataclass
class StoreContents:
    """What the complete shards of a store hold: `shard_of` every (id, rotation) entry (an entry in several
    shards, because its image was replaced after extraction, maps to the last, which holds its new content and
    which HypercolumnStore reads), each shard's file modification time in ns (`mtime_ns`), its entries
    (`held`) and its size in bytes."""

    shard_of: dict[tuple[str, int], int] = field(default_factory=dict)
    mtime_ns: dict[int, int] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)
    bytes: dict[int, int] = field(default_factory=dict)

    @classmethod
    def read(cls, out_dir) -> "StoreContents":
        """The contents of the shard-NNN.h5 files in `out_dir` (a shard being written is a .part file, left out).

        Shards of an older format are left out too: their entries are planned afresh, and the store refuses
        such files with the fix (StaleShardError)."""
        contents = cls()
        for path in sorted(Path(out_dir).glob("shard-*.h5"), key=shard_number):
            number = shard_number(path)
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("format") != SHARD_FORMAT:
                    continue
                keys = list(zip(h5["ids"].asstr()[()], h5["rotations"][()].tolist()))
            contents.shard_of.update({(str(i), int(r)): number for i, r in keys})
            stat = path.stat()
            contents.mtime_ns[number], contents.held[number], contents.bytes[number] = \
                stat.st_mtime_ns, len(keys), stat.st_size
        return contents

    def unused(self, rows: list[dict]) -> dict[int, int]:
        """Per shard, how many of its entries the manifest `rows` do not read from it: entries of removed
        images, rotated copies no plan needs now, copies superseded by a replaced image's new content."""
        used = Counter(int(r["shard"]) for r in rows)
        return {s: n - used[s] for s, n in self.held.items() if n > used[s]}

    def unused_bytes(self, unused: dict[int, int]) -> float:
        """About how much disk the `unused` entries (per shard, :meth:`unused`) hold: their share of each shard."""
        return sum(self.bytes[s] * n / self.held[s] for s, n in unused.items())


def shard_manifest(images: list[dict], plans: list[list[dict]], shards: int | str, settings,
                   extracted: StoreContents | None = None) -> list[dict]:
    """The (image, rotation) entries the plans need, each with its path, shard and number of views.

    A class that any plan augments gets all three rotations of every image extracted (and every mirrored
    orientation, tta.MIRRORED, a plan has for any of its images: the copies of d8 averaging), so the
    manifest depends on class membership, not on fold assignment. Shards are append-only: an entry
    the store already holds (`extracted`) stays in its shard unless its image file is newer than that
    shard (replaced since); the others (added images, rotated copies a plan needs for the first time,
    replaced images) go to new shards, numbered after every existing one: `shards` of them, or for
    "auto" about VIEWS_PER_SHARD views each (new_shard_count). So no shard's entries ever change, and
    adding images extracts only their entries, however much the store grows. `settings`
    (ExtractionSettings) says how many views an image of its width and height has.
    """
    from .folds import ROTATIONS

    extracted = extracted or StoreContents()
    path_of = {r["id"]: r["path"] for r in images}
    views_of = {r["id"]: len(settings.view_origins(int(r["width"]), int(r["height"]))) for r in images}
    rotations = {}
    for plan in plans:
        # per class, the orientations any of its rows has, and all three rotations wherever one is there
        of_class = {}
        for r in plan:
            rotation = int(r["rotation"])
            of_class.setdefault(r["class"], {0}).update({rotation, *ROTATIONS} if rotation else ())
        for r in plan:
            rotations.setdefault(r["id"], {0}).update(of_class[r["class"]])
    shard_of, new = {}, []
    for key in ((i, rot) for i in sorted(rotations) for rot in sorted(rotations[i])):
        shard = extracted.shard_of.get(key)
        if shard is not None and Path(path_of[key[0]]).stat().st_mtime_ns <= extracted.mtime_ns[shard]:
            shard_of[key] = shard
        else:
            new.append(key)
    # The new entries in id order, cut into runs of about equal views.
    first = max(extracted.held, default=-1) + 1
    total = sum(views_of[i] for i, _ in new)
    count = min(new_shard_count(shards, total), len(new))
    before = 0
    for i, rot in new:
        shard_of[(i, rot)] = first + before * count // max(total, 1)
        before += views_of[i]
    return [{"id": i, "rotation": rot, "path": path_of[i], "shard": shard_of[(i, rot)], "views": views_of[i]}
            for i, rot in sorted(shard_of)]


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

    An entry in several shards (its image was replaced after extraction: shard_manifest put its new content
    in a new shard) is read from the last of `shard_paths`, which are in shard order.

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
