"""Sparse hypercolumns: VGG16 activations at a random subset of pixels, stored in HDF5 shards.

A hypercolumn is every tap (a conv layer after its ReLU) upsampled to the input size and read at one
pixel. Nothing is upsampled whole: a shallow tap is interpolated *only at the sampled pixels*
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

from . import ActionableError, __version__
from .backbone import Weights, build_vgg16, cpu_has_bf16
from .features import CONV_CHANNELS, CONV_INDEX, POOL5_INDEX, ExtractionSettings
from .io import read_grey
from .maps import sample_feature_maps
from .shards import SHARD_FORMAT

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- images
def prepare_image(grey: np.ndarray, size: int, resize: str = "squash", rotation: int = 0) -> np.ndarray:
    """Grey uint8 of any size -> (size, size) uint8 network input, rotated counter-clockwise.

    ``squash`` resizes the whole micrograph to a square (the paper); ``center_crop`` keeps the aspect
    ratio and crops the centre. The rotation is applied to the square input, so a rotated copy
    is exactly the rotated view of what the network sees for the original.
    """
    im = Image.fromarray(grey)
    if resize == "center_crop":
        scale = size / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    elif resize == "squash":
        im = im.resize((size, size), Image.BILINEAR)
    else:
        raise ValueError(f"unknown resize mode {resize!r} (squash or center_crop)")
    return np.ascontiguousarray(np.rot90(np.asarray(im), k=(rotation // 90) % 4))


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def sample_coordinates(seed: int, image_id: str, rotation: int, size: int, n_pixels: int) -> np.ndarray:
    """(n_pixels, 2) distinct (row, col) pixel coordinates, deterministic in (seed, id, rotation)."""
    rng = np.random.default_rng([seed, stable_hash(image_id), rotation])
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
    """Entry number `index` ready for the network, with a note on its source image ('' if none)."""

    index: int
    image: torch.Tensor  # (size, size) uint8
    coords: torch.Tensor  # (P, 2) int16
    note: str


@dataclass
class UnreadableEntry:
    """Entry number `index`, whose file could not be decoded, and why."""

    index: int
    reason: str


class PooledFeatures(NamedTuple):
    """Whole-image features pooled in the network pass, (B, D) float32 each."""

    top: np.ndarray  # the baseline's: global average of pool5, or fc7 (HypercolumnNet)
    hypercolumn: np.ndarray  # the pooled hypercolumn (pool_feature_maps)


class ExtractedBatch(NamedTuple):
    """What the network pass yields for a batch of readable entries, all numpy."""

    taps: list[np.ndarray]  # per tap, what a shard stores of it (stored_taps; float16)
    coords: np.ndarray  # (B, P, 2) sampled pixels
    pooled: PooledFeatures


class EntryBatch(NamedTuple):
    """One loader batch: the readable entries stacked in their original order, and the unreadable ones.

    A NamedTuple, so that DataLoader(pin_memory=True) pins its tensors field by field.
    """

    indices: list[int]
    images: torch.Tensor | None  # (B, size, size) uint8; None when no entry of the batch was readable
    coords: torch.Tensor | None  # (B, P, 2)
    notes: list[str]
    unreadable: list[UnreadableEntry]


def collate_entries(items: list) -> EntryBatch:
    loaded = [item for item in items if isinstance(item, LoadedEntry)]
    return EntryBatch(indices=[e.index for e in loaded],
                      images=torch.stack([e.image for e in loaded]) if loaded else None,
                      coords=torch.stack([e.coords for e in loaded]) if loaded else None,
                      notes=[e.note for e in loaded],
                      unreadable=[item for item in items if isinstance(item, UnreadableEntry)])


class EntryImages(torch.utils.data.Dataset):
    """Decoding, resizing and rotation of the (path, rotation) entries; runs in loader workers.

    Each file is decoded once, here. A file that fails to decode becomes an UnreadableEntry instead of
    an exception, so that one bad file does not end the whole loader; batch with collate_entries.
    """

    def __init__(self, entries, settings: ExtractionSettings):
        self.entries, self.s = entries, settings

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i) -> LoadedEntry | UnreadableEntry:
        e = self.entries[i]
        # Decoders of damaged files raise OSError, ValueError, struct.error, zlib.error and more:
        # whatever a decoder raises, it is this file that is unreadable, not the batch.
        try:
            grey = read_grey(e["path"])
        except Exception as exc:  # noqa: BLE001
            return UnreadableEntry(i, f"{type(exc).__name__}: {exc}")
        img = prepare_image(grey, self.s.image_size, self.s.resize, int(e["rotation"]))
        coords = sample_coordinates(self.s.seed, e["id"], int(e["rotation"]), self.s.image_size, self.s.n_pixels)
        note = size_note(grey.shape[1], grey.shape[0], self.s.image_size)
        return LoadedEntry(i, torch.from_numpy(img.copy()), torch.from_numpy(coords), note)


def iter_hypercolumns(entries: list[dict], net: HypercolumnNet, weights: Weights, settings: ExtractionSettings,
                      device: torch.device, workers: int = 1, on_unreadable=None, on_note=None):
    """Yield an ExtractedBatch (taps, coords, pooled) batch by batch.

    `taps` holds per tap what a shard stores of it (stored_taps; float16), from which
    shards.assemble_hypercolumns makes the (P, F) hypercolumns of each entry; `pooled` the baseline's
    top features and the pooled hypercolumn, both reduced from the whole maps while they are in memory.

    Decoding and resizing run in `workers` loader processes, overlapping the network. On CUDA the
    taps are copied into two alternating sets of pinned host buffers (a pageable copy is ~40x
    slower), so a yielded array stays valid until two batches later: use or copy it before then.

    A file that cannot be decoded raises UnreadableImageError, unless `on_unreadable(index, reason)`
    is given: the entry is then reported there and left out, and the yielded rows are the readable
    entries in their original order. A note on a readable entry (an image far smaller than the
    network input) goes to `on_note(index, note)`, or is logged as a warning without it. Both are
    called before the batch that held the entry is yielded.
    """
    loader = torch.utils.data.DataLoader(
        EntryImages(entries, settings), batch_size=settings.batch_size, num_workers=workers,
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
            with autocast_for(device):
                maps, pooled = net(net_input(batch.images, weights, device))
            taps = stored_taps(maps, batch.coords.to(device), settings)
            if device.type == "cuda":
                # Alternate by batches yielded, not loaded: a skipped batch must not reuse the
                # buffers the caller may still be reading.
                slot = yielded % 2
                if pinned[slot] is None or [b.shape for b in pinned[slot]] != [t.shape for t in taps]:
                    pinned[slot] = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in taps]
                taps = [buffer.copy_(t) for buffer, t in zip(pinned[slot], taps)]
            yielded += 1
            yield ExtractedBatch([t.numpy() for t in taps], batch.coords.numpy(),
                                 PooledFeatures(pooled.float().cpu().numpy(), pool_feature_maps(maps).cpu().numpy()))


def extract_shard(entries: list[dict], out_path, weights: Weights, settings: ExtractionSettings,
                  device: torch.device, workers: int = 1, progress: bool = True) -> dict:
    """Extract hypercolumns for `entries` (dicts with id, rotation, path) into one HDF5 shard.

    The file is written under a temporary name and renamed when complete, so an interrupted job
    never leaves a shard that looks whole. Returns timing figures.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".part")
    net = HypercolumnNet(weights, settings.taps, device)
    n, p = len(entries), settings.n_pixels
    start, done = time.perf_counter(), 0
    with h5py.File(tmp, "w") as h5:
        tap_ds = []
        for tap in settings.taps:
            side, channels = settings.map_side(tap), CONV_CHANNELS[tap]
            shape = (side, side, channels) if settings.stored_as_map(tap) else (p, channels)
            # One chunk per entry and tap: a reader takes whole entries.
            tap_ds.append(h5.create_dataset(f"taps/{tap}", (n, *shape), dtype="float16", chunks=(1, *shape)))
        coords_ds = h5.create_dataset("coords", (n, p, 2), dtype="int16")
        # The baseline's top features as "pooled", the pooled hypercolumn as "pooled_hypercolumns".
        pooled_ds = PooledFeatures(h5.create_dataset("pooled", (n, net.pooled_dim), dtype="float32"),
                                   h5.create_dataset("pooled_hypercolumns", (n, 2 * settings.n_features),
                                                     dtype="float32"))
        h5.create_dataset("ids", data=np.array([e["id"] for e in entries], dtype=h5py.string_dtype()))
        h5.create_dataset("rotations", data=np.array([int(e["rotation"]) for e in entries], dtype="int16"))
        h5.attrs.update({**weights.describe(), "format": SHARD_FORMAT, "taps": json.dumps(list(settings.taps)),
                         "density": settings.density, "image_size": settings.image_size,
                         "resize": settings.resize, "seed": settings.seed, "n_features": settings.n_features,
                         "cntem_version": __version__})
        bar = tqdm(total=n, desc=f"hypercolumns {out_path.name}", unit="img", disable=not progress)
        # One writer thread: HDF5 writes of batch i overlap the network on batch i + 1. Waiting for
        # write i - 1 before submitting write i also keeps iter_hypercolumns' pinned buffers safe.
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            for batch in iter_hypercolumns(entries, net, weights, settings, device, workers):
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_batch, tap_ds, coords_ds, pooled_ds, done, batch)
                done += len(batch.coords)
                bar.update(len(batch.coords))
            if pending is not None:
                pending.result()
        bar.close()
    os.replace(tmp, out_path)
    elapsed = time.perf_counter() - start
    return {"images": n, "seconds": elapsed, "images_per_s": n / max(elapsed, 1e-9)}


def layer_activations(path, net: HypercolumnNet, weights: Weights, settings: ExtractionSettings):
    """The network input and each tap's channel-mean activation map for one image (Fig. 7)."""
    device = next(net.parameters()).device
    img = prepare_image(read_grey(path), settings.image_size, settings.resize)
    with torch.inference_mode():
        maps, _ = net(net_input(torch.from_numpy(img)[None], weights, device))
    return img, [m[0].float().mean(0).cpu().numpy() for m in maps]


def _write_batch(tap_ds, coords_ds, pooled_ds: PooledFeatures, start, batch: ExtractedBatch):
    end = start + len(batch.coords)
    for dataset, values in zip([*tap_ds, *pooled_ds], [*batch.taps, *batch.pooled]):
        dataset[start:end] = values
    coords_ds[start:end] = batch.coords


def net_input(images: torch.Tensor, weights: Weights, device: torch.device) -> torch.Tensor:
    x = weights.preprocess.apply(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last)
