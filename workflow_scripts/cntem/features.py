"""What the hypercolumn features are: VGG16's convolution layers by Keras name and the extraction settings.

Torch-free, so that config checks, shard readers and the many small learning jobs start fast.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Keras layer name -> index of the conv layer in torchvision's vgg16().features (ReLU follows at +1).
CONV_INDEX = {
    "block1_conv1": 0, "block1_conv2": 2,
    "block2_conv1": 5, "block2_conv2": 7,
    "block3_conv1": 10, "block3_conv2": 12, "block3_conv3": 14,
    "block4_conv1": 17, "block4_conv2": 19, "block4_conv3": 21,
    "block5_conv1": 24, "block5_conv2": 26, "block5_conv3": 28,
}
CONV_CHANNELS = {name: 64 * 2 ** min(int(name[5]) - 1, 3) for name in CONV_INDEX}
POOL5_INDEX = 30
# VGG16's stride at block5: a micrograph whose sides are multiples of it has maps that cut into views exactly.
VIEW_ALIGN = 16
# Input modes that see the whole micrograph as several network-input-sized views, not one squashed input.
VIEW_MODES = ("tiles", "native")


def view_offsets(length: int, size: int) -> list[int]:
    """Starts of the fewest `size`-long windows, at multiples of VIEW_ALIGN and evenly spread, that cover
    0..`length` (a multiple of VIEW_ALIGN, at least `size`); neighbours overlap by what rounding needs."""
    n = -(-length // size)
    while True:
        starts = sorted({int(round(x / VIEW_ALIGN)) * VIEW_ALIGN for x in np.linspace(0, length - size, n)})
        if all(b - a <= size for a, b in zip(starts, starts[1:])):
            return starts
        n += 1


def view_grid(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the size x size views covering a height x width network input, row by row."""
    return [(top, left) for top in view_offsets(height, size) for left in view_offsets(width, size)]


@dataclass(frozen=True)
class ExtractionSettings:
    """How hypercolumns are taken from an image: which layers, at what share of which pixels, of what input.

    Shards record these with the weights' identity; a model knows them, and prediction repeats them.
    `input_mode` says what the network sees (squash, center_crop: one view of the resized micrograph;
    tiles, native: the views covering it at scaled_size, see the schema); `density` is the share of each
    view's pixels sampled. `batch_size` changes only the speed.
    """

    taps: tuple[str, ...] = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
    density: float = 0.10
    image_size: int = 224
    input_mode: str = "squash"
    max_side: int = 1024
    seed: int = 0
    batch_size: int = 16

    @property
    def n_pixels(self) -> int:
        return int(self.density * self.image_size**2)

    @property
    def n_features(self) -> int:
        return sum(CONV_CHANNELS[t] for t in self.taps)

    def map_side(self, tap: str) -> int:
        """Side of a tap's feature map: each max-pool before its block halves the input (rounding down)."""
        return self.image_size // 2 ** (int(tap[5]) - 1)

    def stored_as_map(self, tap: str) -> bool:
        """Whether a shard keeps the tap's whole feature map rather than its columns at the sampled pixels.

        Whichever holds fewer values: at 224 px and 10% density the three deepest taps' maps
        (56x56, 28x28 and 14x14) are smaller than their 5,017 sampled columns, which are then
        interpolated when read; the shallow taps are stored as the sampled columns.
        """
        return self.map_side(tap) ** 2 < self.n_pixels

    def scaled_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) at which tiles and native modes read a micrograph: its own pixels, shrunk so that the
        longer side is at most `max_side`, enlarged when the shorter side is below one view, and rounded to
        multiples of VIEW_ALIGN (squash and center_crop: the network input)."""
        if self.input_mode not in VIEW_MODES:
            return self.image_size, self.image_size
        scale = max(min(1.0, self.max_side / max(width, height)), self.image_size / min(width, height))
        return tuple(max(self.image_size, round(side * scale / VIEW_ALIGN) * VIEW_ALIGN) for side in (width, height))

    def view_origins(self, width: int, height: int) -> list[tuple[int, int]]:
        """(top, left) of each image_size x image_size view of a micrograph read at scaled_size, row by row.

        One view of the whole (squashed or cropped) input for squash and center_crop; for tiles and native
        the views covering the micrograph, overlapping only where rounding to VIEW_ALIGN needs it.
        """
        w, h = self.scaled_size(width, height)
        return view_grid(h, w, self.image_size)

    def stored_values(self) -> int:
        """Hypercolumn values a shard stores per view (float16 each)."""
        return sum(CONV_CHANNELS[t] * (self.map_side(t) ** 2 if self.stored_as_map(t) else self.n_pixels)
                   for t in self.taps)
