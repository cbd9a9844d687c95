"""Files of one fold's entries encoded by an image representation (VLAD, pooled hypercolumns): what the
classifier jobs fit and predict. One HDF5 group per split (train, val) holding ``X``, ``ids``,
``rotations`` and ``y``; the encoder's description as attributes.

Kept free of torch, like the shard readers: the many small learning jobs start fast.
"""
from __future__ import annotations

import h5py
import numpy as np


def write_encoded(path, encoder, store, splits: dict, progress: bool = False) -> None:
    """Encode each split's plan rows (id, rotation, class) from `store` with `encoder` into one HDF5 group per split.

    Vectors go to the file as they are made: the job's memory does not grow with the entries.
    """
    with h5py.File(path, "w") as h5:
        for name, rows in splits.items():
            g = h5.create_group(name)
            x = g.create_dataset("X", (len(rows), encoder.dim), np.float32,
                                 chunks=(1, encoder.dim) if rows else None)
            encoder.transform_store(store, [(r["id"], int(r["rotation"])) for r in rows], progress, out=x)
            g.create_dataset("ids", data=np.array([r["id"] for r in rows], dtype=h5py.string_dtype()))
            g.create_dataset("rotations", data=np.array([int(r["rotation"]) for r in rows], dtype=np.int16))
            g.create_dataset("y", data=np.array([r["class"] for r in rows], dtype=h5py.string_dtype()))
        h5.attrs.update(encoder.describe())


def load_encoded(path, splits=None) -> tuple[dict, dict]:
    """(splits, the encoder's description) of a file write_encoded made; only the named `splits` (e.g.
    ``("train",)``: what is never read cannot leak) or all."""
    with h5py.File(path, "r") as h5:
        splits = {name: {"X": g["X"][()], "ids": list(g["ids"].asstr()[()]),
                         "rotations": g["rotations"][()], "y": list(g["y"].asstr()[()])}
                  for name, g in h5.items() if splits is None or name in splits}
        return splits, dict(h5.attrs)
