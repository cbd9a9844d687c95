"""The pooled hypercolumn: an image representation with nothing to fit (not in the paper).

The global mean of every tapped feature map (after its ReLU), in tap order, then the global max of
every tapped map, in tap order: 2 x 1472 values at the paper's five taps. It is computed in the network
pass, from the whole maps (hypercolumns.pool_feature_maps), and stored in the shards; the encoder only
reads it back, from a shard or from the network pass of new image files.
"""
from __future__ import annotations

from .features import CONV_CHANNELS


class PooledHypercolumnEncoder:
    """An image representation: the pooled hypercolumn of the maps of `taps`.

    The VladEncoder interface: ``fit`` (nothing to learn; checks that the store pools these taps),
    ``transform_store`` (shard entries), ``transform_extracted`` (batches of the network pass), ``dim``,
    ``describe``, ``save``/``load``.
    """

    name = "pooled"

    def __init__(self, taps):
        self.taps = tuple(taps)

    @property
    def dim(self) -> int:
        return 2 * sum(CONV_CHANNELS[t] for t in self.taps)

    def to(self, device) -> "PooledHypercolumnEncoder":
        """Nothing to move: the pooling ran on the network's device."""
        return self

    def fit(self, store, entries, progress: bool = False) -> "PooledHypercolumnEncoder":
        if tuple(store.taps) != self.taps:
            raise ValueError(f"the shards pool the taps {list(store.taps)}, not {list(self.taps)}")
        return self

    def transform_store(self, store, entries, progress: bool = False, out=None):
        """Pooled hypercolumns (N, dim) float32 of (id, rotation) `entries`, into `out` when given."""
        x = store.pooled_hypercolumns(entries)
        if out is None:
            return x
        out[:len(x)] = x
        return out

    def transform_extracted(self, batch, settings):
        """(B, dim) of a batch of the network pass (hypercolumns.ExtractedBatch)."""
        return batch.pooled.hypercolumn

    def describe(self) -> dict:
        return {"representation": self.name, "taps": list(self.taps)}

    def save(self, folder) -> dict:
        """Nothing to write beside the description, which model.json keeps."""
        return self.describe()

    @classmethod
    def load(cls, folder, description: dict) -> "PooledHypercolumnEncoder":
        return cls(description["taps"])
