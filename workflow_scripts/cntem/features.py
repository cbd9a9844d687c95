"""What the hypercolumn features are: VGG16's convolution layers by Keras name and the extraction settings.

Torch-free, so that config checks, shard readers and the many small learning jobs start fast.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class ExtractionSettings:
    """How hypercolumns are taken from an image: which layers, at what share of which pixels, of what input.

    Shards record these with the weights' identity; a model knows them, and prediction repeats them.
    `batch_size` changes only the speed.
    """

    taps: tuple[str, ...] = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
    density: float = 0.10
    image_size: int = 224
    resize: str = "squash"
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

    def stored_values(self) -> int:
        """Hypercolumn values a shard stores per entry (float16 each)."""
        return sum(CONV_CHANNELS[t] * (self.map_side(t) ** 2 if self.stored_as_map(t) else self.n_pixels)
                   for t in self.taps)
