"""Sparse hypercolumns: VGG16 activations at a random subset of pixels, stored in HDF5 shards.

A hypercolumn is every tap (a conv layer after its ReLU) upsampled to the input size and read at one
pixel. What the network sees of a micrograph (ExtractionSettings.input_mode) is one or more views of
image_size x image_size: the squashed micrograph (the paper), or views covering it at its own resolution
(tiles: each view through the network; native: the whole micrograph at once, its maps cut into the views).
An entry's views are stored as consecutive rows, each with its own sampled pixels; its pooled features
are pooled over all of its views. Nothing is upsampled whole: a shallow tap is interpolated *only at the sampled pixels*
(``grid_sample``), and a deep tap, whose map holds fewer values than its sampled columns, is stored as
its map and interpolated when read (shards.assemble_hypercolumns). Both equal upsampling and indexing
(tested). The same pass pools each entry's whole maps into its pooled hypercolumn (pool_feature_maps),
and the top of the network into the baseline's features.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch
from PIL import Image

from . import ActionableError, __version__, is_disk_full
from .backbone import Weights, build_vgg16, cpu_has_bf16
from .features import CONV_CHANNELS, CONV_INDEX, POOL5_INDEX, VIEW_MODES, ExtractionSettings, view_grid
from .io import read_grey
from .maps import sample_feature_maps
from .shards import SHARD_FORMAT, disk_full_error
from .tta import orient

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- images
def prepare_image(grey: np.ndarray, settings: ExtractionSettings, rotation: int = 0) -> np.ndarray:
    """Grey uint8 of any size -> the uint8 network input in orientation `rotation` (tta.orient: rotated
    counter-clockwise, mirrored first from 360 on).

    ``squash`` resizes the whole micrograph to an image_size square (the paper); ``center_crop`` keeps the
    aspect ratio and crops the centre; ``tiles`` and ``native`` resize it to its scaled_size (its own pixels
    up to max_side), whose views the network reads. The orientation is applied to the resized input, so a
    rotated or mirrored copy is exactly that view of what the network sees for the original.
    """
    im, size, mode = Image.fromarray(grey), settings.image_size, settings.input_mode
    if mode in ("tiles", "native"):
        scaled = settings.scaled_size(im.width, im.height)
        im = im if scaled == im.size else im.resize(scaled, Image.BILINEAR)
    elif mode == "center_crop":
        scale = size / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    elif mode == "squash":
        im = im.resize((size, size), Image.BILINEAR)
    else:
        raise ValueError(f"unknown input mode {mode!r} (squash, center_crop, tiles or native)")
    # a writable copy: PIL's array is read-only, and torch warns about tensors of read-only arrays
    return np.ascontiguousarray(orient(np.array(im), rotation))


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def sample_coordinates(seed: int, image_id: str, rotation: int, size: int, n_pixels: int, view: int = 0) -> np.ndarray:
    """(n_pixels, 2) distinct (row, col) pixel coordinates of a view, deterministic in (seed, id, rotation, view)."""
    # The first view keeps the key of a single-view entry, so squash shards sample the pixels they always did.
    rng = np.random.default_rng([seed, stable_hash(image_id), rotation, *([view] if view else [])])
    flat = np.sort(rng.choice(size * size, size=n_pixels, replace=False))
    return np.stack([flat // size, flat % size], 1).astype(np.int16)


# ----------------------------------------------------------------------------- network
def pool_feature_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    """The pooled hypercolumn of each image: (B, 2 x sum of channels) float32 from the tapped maps (B, C, h, w).

    First the global mean of every tapped map, in tap order, then the global max of every tapped map, in
    tap order: 2 x 1472 values at the paper's taps. Taken over each whole map at its own resolution (the
    network's values, not an upsampled copy), with means accumulated in float32 whatever the maps' dtype.
    Extraction and prediction both pool through this function (in iter_hypercolumns).
    """
    means = [fmap.mean(dim=(2, 3), dtype=torch.float32) for fmap in maps]
    maxima = [fmap.amax(dim=(2, 3)).float() for fmap in maps]
    return torch.cat(means + maxima, 1)


def stored_taps(maps, coords: torch.Tensor, settings: ExtractionSettings) -> list[torch.Tensor]:
    """What a shard keeps of each tap, in float16: the whole map (B, side, side, C) where that holds
    fewer values than the columns at the sampled pixels (B, P, C), else those columns."""
    parts = []
    for tap, fmap in zip(settings.taps, maps):
        if settings.stored_as_map(tap):
            parts.append(fmap.permute(0, 2, 3, 1).to(torch.float16))  # a view of channels_last maps, cast
        else:
            parts.append(sample_feature_maps(fmap, coords, settings.image_size).to(torch.float16))
    return parts


class HypercolumnNet(torch.nn.Module):
    """VGG16 up to pool5: the tapped maps, and the baseline's pooled features of the image.

    The pooled features are the global average of pool5 (512 values) with conv-only weights, which
    the default (the paper's Keras "notop" release) are; fc7 after its ReLU (4096) only when the
    weights include the fully connected layers, as the paper's VGG16 + LS baseline used.
    """

    def __init__(self, weights: Weights, taps, device: torch.device):
        super().__init__()
        vgg = build_vgg16(weights, device)
        self.features = vgg.features
        self.head = vgg.classifier  # None with conv-only weights
        self.avgpool = vgg.avgpool
        self.tap_index = {CONV_INDEX[t] + 1: t for t in taps}  # output of the ReLU after each conv
        self.taps = list(taps)

    @property
    def pooled_dim(self) -> int:
        return 4096 if self.head is not None else 512

    def forward(self, x):
        maps = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.tap_index:
                maps[self.tap_index[i]] = x
            if i == POOL5_INDEX:
                break
        if self.head is None:  # conv-only weights (the default): global average of pool5
            pooled = x.mean(dim=(2, 3))
        else:  # weights with the fully connected layers: fc7 after its ReLU
            pooled = self.head[:5](torch.flatten(self.avgpool(x), 1))
        return [maps[t] for t in self.taps], pooled


def loader_workers(device: torch.device, threads: int) -> int:
    """Decoding processes for an extraction with `threads` cores.

    On a CPU the network wants every core, and decoding (~6 ms an image) inline costs less than a
    loader process preempting torch's threads (on 2 cores: 0.89 of the bare forward rate inline,
    0.63 with one loader process). A GPU is fed by loader processes on the other cores.
    """
    return 0 if device.type == "cpu" else max(1, threads - 1)


def autocast_for(device: torch.device):
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------- shards
# Above this factor most of what the network sees of an image is interpolation between its few
# pixels, not micrograph texture: such an image is flagged (its class is a guess from blur).
MAX_UPSAMPLING = 2.0


class UnreadableImageError(ActionableError, ValueError):
    """An image file that cannot be decoded any more (it was readable when ingested)."""


def size_note(width: int, height: int, size: int) -> str:
    """A warning for an image far smaller than the size x size network input; '' for any other."""
    factor = size / min(width, height)
    if factor <= MAX_UPSAMPLING:
        return ""
    return (f"{width}x{height} pixels is far smaller than the {size}x{size} network input (upsampled "
            f"{factor:.1f}x): its features come mostly from interpolated pixels, so its class is unreliable")


@dataclass
class LoadedEntry:
    """Entry number `index` ready for the network: its input (H, W) uint8 (prepare_image), the (top, left) of
    its views, their sampled pixels (V, P, 2) int16, and a note on its source image ('' if none)."""

    index: int
    image: torch.Tensor
    origins: list[tuple[int, int]]
    coords: torch.Tensor
    note: str


@dataclass
class UnreadableEntry:
    """Entry number `index`, whose file could not be decoded, and why."""

    index: int
    reason: str


class PooledFeatures(NamedTuple):
    """Whole-image features pooled in the network pass, (B, D) float32 each: one row per entry, over all its views."""

    top: np.ndarray  # the baseline's: global average of pool5, or fc7 (HypercolumnNet)
    hypercolumn: np.ndarray  # the pooled hypercolumn (pool_feature_maps)


class ExtractedBatch(NamedTuple):
    """What the network pass yields for a batch of readable entries, all numpy."""

    taps: list[np.ndarray]  # per tap, what a shard stores of it for each view (stored_taps; float16)
    coords: np.ndarray  # (V, P, 2) sampled pixels of each view
    views: np.ndarray  # (B,) views of each entry: its rows of taps and coords are consecutive
    pooled: PooledFeatures


class EntryBatch(NamedTuple):
    """One loader batch: the readable entries in their original order, and the unreadable ones.

    A NamedTuple, so that DataLoader(pin_memory=True) pins its tensors field by field.
    """

    indices: list[int]
    images: list[torch.Tensor]  # (H, W) uint8 each
    origins: list[list[tuple[int, int]]]
    coords: torch.Tensor | None  # (V, P, 2), every view of every entry; None when no entry was readable
    notes: list[str]
    unreadable: list[UnreadableEntry]


def collate_entries(items: list) -> EntryBatch:
    loaded = [item for item in items if isinstance(item, LoadedEntry)]
    return EntryBatch(indices=[e.index for e in loaded], images=[e.image for e in loaded],
                      origins=[e.origins for e in loaded],
                      coords=torch.cat([e.coords for e in loaded]) if loaded else None,
                      notes=[e.note for e in loaded],
                      unreadable=[item for item in items if isinstance(item, UnreadableEntry)])


class EntryImages(torch.utils.data.Dataset):
    """Decoding, resizing and rotation of the (path, rotation) entries, and their views' pixel samples; runs in
    loader workers.

    Each file is decoded once, here. A file that fails to decode becomes an UnreadableEntry instead of
    an exception, so that one bad file does not end the whole loader; batch with collate_entries.
    """

    def __init__(self, entries, settings: ExtractionSettings):
        self.entries, self.s = entries, settings

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i) -> LoadedEntry | UnreadableEntry:
        e, s = self.entries[i], self.s
        # Decoders of damaged files raise OSError, ValueError, struct.error, zlib.error and more:
        # whatever a decoder raises, it is this file that is unreadable, not the batch.
        try:
            grey = read_grey(e["path"])
        except Exception as exc:  # noqa: BLE001
            return UnreadableEntry(i, f"{type(exc).__name__}: {exc}")
        img = prepare_image(grey, s, int(e["rotation"]))
        origins = view_grid(*img.shape, s.image_size)
        coords = np.stack([sample_coordinates(s.seed, e["id"], int(e["rotation"]), s.image_size, s.n_pixels, view)
                           for view in range(len(origins))])
        note = size_note(grey.shape[1], grey.shape[0], s.image_size)
        return LoadedEntry(i, torch.from_numpy(img), origins, torch.from_numpy(coords), note)


def views_pass(net: HypercolumnNet, views: torch.Tensor, coords: torch.Tensor, weights: Weights,
               settings: ExtractionSettings, device: torch.device):
    """Each (size, size) uint8 view through the network, batch_size at a time -> (stored taps, per-view top
    features, per-view pooled hypercolumns)."""
    parts = []
    for start in range(0, len(views), settings.batch_size):
        stop = start + settings.batch_size
        with autocast_for(device):
            maps, top = net(net_input(views[start:stop], weights, device))
        parts.append((stored_taps(maps, coords[start:stop].to(device), settings), top.float(), pool_feature_maps(maps)))
    if len(parts) == 1:
        return parts[0]
    return [torch.cat(t) for t in zip(*(p[0] for p in parts))], torch.cat([p[1] for p in parts]), \
        torch.cat([p[2] for p in parts])


def native_pass(net: HypercolumnNet, image: torch.Tensor, origins, coords: torch.Tensor, weights: Weights,
                settings: ExtractionSettings, device: torch.device):
    """A whole micrograph (H, W) uint8 through the network at once (fully convolutional), its maps cut into
    the views at `origins` -> (stored taps of the views, top features (1, D), pooled hypercolumn (1, 2F)).

    H and W are multiples of VGG16's block-5 stride (scaled_size), so each view's cut equals the map cells
    over its pixels; the pooled features are those of the whole maps.
    """
    with autocast_for(device):
        maps, top = net(net_input(image[None], weights, device))
    size, height = settings.image_size, image.shape[0]
    view_maps = []
    for fmap in maps:
        stride = height // fmap.shape[2]
        side = size // stride
        view_maps.append(torch.cat([fmap[:, :, y // stride:y // stride + side, x // stride:x // stride + side]
                                    for y, x in origins]))
    return stored_taps(view_maps, coords.to(device), settings), top.float(), pool_feature_maps(maps)


def pool_over_views(top: torch.Tensor, pooled: torch.Tensor, views: list[int]) -> PooledFeatures:
    """Per-view top features and pooled hypercolumns -> one row per entry: the mean of the top features and of
    the map means, the max of the map maxima, over each entry's consecutive `views` rows."""
    if max(views) == 1:
        return PooledFeatures(top.cpu().numpy(), pooled.cpu().numpy())
    half = pooled.shape[1] // 2
    per_entry = [(t.mean(0), torch.cat([p[:, :half].mean(0), p[:, half:].amax(0)]))
                 for t, p in zip(top.split(views), pooled.split(views))]
    return PooledFeatures(torch.stack([t for t, _ in per_entry]).cpu().numpy(),
                          torch.stack([p for _, p in per_entry]).cpu().numpy())


def iter_hypercolumns(entries: list[dict], net: HypercolumnNet, weights: Weights, settings: ExtractionSettings,
                      device: torch.device, workers: int = 1, on_unreadable=None, on_note=None):
    """Yield an ExtractedBatch (taps, coords, views, pooled) batch by batch.

    `taps` holds per tap what a shard stores of it for each view (stored_taps; float16), from which
    shards.assemble_hypercolumns makes the (P, F) hypercolumns of a view; `views` how many consecutive
    rows each entry has; `pooled` the baseline's top features and the pooled hypercolumn of each entry,
    both reduced from the whole maps while they are in memory.

    Decoding and resizing run in `workers` loader processes, overlapping the network. On CUDA the
    taps are copied into two alternating sets of pinned host buffers (a pageable copy is ~40x
    slower), so a yielded array stays valid until two batches later: use or copy it before then.

    A file that cannot be decoded raises UnreadableImageError, unless `on_unreadable(index, reason)`
    is given: the entry is then reported there and left out, and the yielded rows are the readable
    entries in their original order. A note on a readable entry (an image far smaller than the
    network input) goes to `on_note(index, note)`, or is logged as a warning without it. Both are
    called before the batch that held the entry is yielded.
    """
    native = settings.input_mode == "native"
    # Squashed entries are one view each: batch_size of them at a time. In tiles and native modes one entry is
    # many views (25 of a 2k frame at max_side 1,024): one entry at a time, so memory stays that of one
    # micrograph's stored views; tiles go through the network batch_size at a time.
    loader = torch.utils.data.DataLoader(
        EntryImages(entries, settings), batch_size=1 if settings.input_mode in VIEW_MODES else settings.batch_size,
        num_workers=workers,
        collate_fn=collate_entries, pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)
    pinned = [None, None]
    yielded = 0
    with torch.inference_mode():
        for batch in loader:
            for bad in batch.unreadable:
                if on_unreadable is None:
                    raise UnreadableImageError(f"{entries[bad.index]['path']}: unreadable ({bad.reason}); "
                                               "re-export or remove it")
                on_unreadable(bad.index, bad.reason)
            for index, note in zip(batch.indices, batch.notes):
                if not note:
                    continue
                if on_note is None:
                    log.warning("%s: %s", entries[index]["path"], note)
                else:
                    on_note(index, note)
            if not batch.indices:  # every file of this batch was unreadable
                continue
            views = [len(origins) for origins in batch.origins]
            if native:  # pooled over the whole maps already
                taps, top, pooled = native_pass(net, batch.images[0], batch.origins[0], batch.coords, weights,
                                                settings, device)
                entry_pooled = PooledFeatures(top.cpu().numpy(), pooled.cpu().numpy())
            else:
                size = settings.image_size
                crops = torch.stack([image[t:t + size, left:left + size]
                                     for image, origins in zip(batch.images, batch.origins) for t, left in origins])
                taps, top, pooled = views_pass(net, crops, batch.coords, weights, settings, device)
                entry_pooled = pool_over_views(top, pooled, views)
            if device.type == "cuda":
                # Alternate by batches yielded, not loaded: a skipped batch must not reuse the
                # buffers the caller may still be reading.
                slot = yielded % 2
                if pinned[slot] is None or [b.shape for b in pinned[slot]] != [t.shape for t in taps]:
                    pinned[slot] = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in taps]
                taps = [buffer.copy_(t) for buffer, t in zip(pinned[slot], taps)]
            yielded += 1
            yield ExtractedBatch([t.numpy() for t in taps], batch.coords.numpy(), np.array(views, np.int32),
                                 entry_pooled)


def extract_shard(entries: list[dict], out_path, weights: Weights, settings: ExtractionSettings,
                  device: torch.device, workers: int = 1, progress: bool = True) -> dict:
    """Extract hypercolumns for `entries` (dicts with id, rotation, path) into one HDF5 shard.

    Per entry: ``ids``, ``rotations``, ``views`` (how many views it has) and its pooled features; per
    view, in entry order: the stored taps and the sampled pixels. The file is written under a temporary
    name and renamed when complete, so an interrupted job never leaves a shard that looks whole; a failed one
    removes it, and a full disk raises DiskSpaceError. Returns timing figures.
    """
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".part")
    net = HypercolumnNet(weights, settings.taps, device)
    start, cursor = time.perf_counter(), ShardCursor()
    try:
        _write_shard(tmp, entries, net, weights, settings, device, workers, cursor, progress)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(out_path, exc) from exc
        raise
    os.replace(tmp, out_path)
    elapsed = time.perf_counter() - start
    n = len(entries)
    return {"images": n, "views": cursor.views, "seconds": elapsed, "images_per_s": n / max(elapsed, 1e-9)}


def _write_shard(tmp: Path, entries: list[dict], net: HypercolumnNet, weights: Weights, settings: ExtractionSettings,
                 device: torch.device, workers: int, cursor: "ShardCursor", progress: bool) -> None:
    """extract_shard's HDF5 file, at `tmp`."""
    from tqdm import tqdm

    n, p = len(entries), settings.n_pixels
    with h5py.File(tmp, "w") as h5:
        view_ds = []
        for tap in settings.taps:
            side, channels = settings.map_side(tap), CONV_CHANNELS[tap]
            shape = (side, side, channels) if settings.stored_as_map(tap) else (p, channels)
            # One chunk per view and tap: a reader takes whole views. Grown as views arrive.
            view_ds.append(h5.create_dataset(f"taps/{tap}", (0, *shape), dtype="float16", chunks=(1, *shape),
                                             maxshape=(None, *shape)))
        view_ds.append(h5.create_dataset("coords", (0, p, 2), dtype="int16", chunks=(1, p, 2), maxshape=(None, p, 2)))
        # The baseline's top features as "pooled", the pooled hypercolumn as "pooled_hypercolumns".
        pooled_ds = PooledFeatures(h5.create_dataset("pooled", (n, net.pooled_dim), dtype="float32"),
                                   h5.create_dataset("pooled_hypercolumns", (n, 2 * settings.n_features),
                                                     dtype="float32"))
        views_ds = h5.create_dataset("views", (n,), dtype="int32")
        h5.create_dataset("ids", data=np.array([e["id"] for e in entries], dtype=h5py.string_dtype()))
        h5.create_dataset("rotations", data=np.array([int(e["rotation"]) for e in entries], dtype="int16"))
        h5.attrs.update({**weights.describe(), "format": SHARD_FORMAT, "taps": json.dumps(list(settings.taps)),
                         "density": settings.density, "image_size": settings.image_size,
                         "input_mode": settings.input_mode, "max_side": settings.max_side, "seed": settings.seed,
                         "n_features": settings.n_features, "cntem_version": __version__})
        bar = tqdm(total=n, desc=f"hypercolumns {tmp.name.removesuffix('.part')}", unit="img", disable=not progress)
        # One writer thread: HDF5 writes of batch i overlap the network on batch i + 1. Waiting for
        # write i - 1 before submitting write i also keeps iter_hypercolumns' pinned buffers safe.
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            for batch in iter_hypercolumns(entries, net, weights, settings, device, workers):
                if pending is not None:
                    pending.result()
                pending = writer.submit(cursor.write, view_ds, views_ds, pooled_ds, batch)
                bar.update(len(batch.views))
            if pending is not None:
                pending.result()
        bar.close()


def layer_activations(path, net: HypercolumnNet, weights: Weights, settings: ExtractionSettings):
    """The network input and each tap's channel-mean activation map for one image (Fig. 7)."""
    device = next(net.parameters()).device
    img = prepare_image(read_grey(path), settings)
    with torch.inference_mode():
        maps, _ = net(net_input(torch.from_numpy(img)[None], weights, device))
    return img, [m[0].float().mean(0).cpu().numpy() for m in maps]


class ShardCursor:
    """Where the next batch goes in a shard being written: its first entry row and its first view row."""

    def __init__(self):
        self.entries = self.views = 0

    def write(self, view_datasets, views_dataset, pooled_datasets: PooledFeatures, batch: ExtractedBatch) -> None:
        """The batch's views (its taps, then its coordinates, into `view_datasets`, grown to fit) and entries."""
        end = self.views + len(batch.coords)
        for dataset, values in zip(view_datasets, [*batch.taps, batch.coords]):
            dataset.resize(end, axis=0)
            dataset[self.views:end] = values
        last = self.entries + len(batch.views)
        for dataset, values in zip([views_dataset, *pooled_datasets], [batch.views, *batch.pooled]):
            dataset[self.entries:last] = values
        self.entries, self.views = last, end


def net_input(images: torch.Tensor, weights: Weights, device: torch.device) -> torch.Tensor:
    x = weights.preprocess.apply(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last)
