"""Test-time rotation averaging (beyond the paper): an image's class probabilities are the mean of the
classifier's probabilities for the image and its three 90-degree rotated copies.

A TEM micrograph has no preferred orientation, but VGG16's features and so the classifier's output are not
rotation invariant; averaging over the four rotations makes the prediction invariant to them. The rotated copies
are the network inputs rotated, as for the paper's rotation balancing (hypercolumns.prepare_image). Used by
cross-validation (evaluation.rotation_averaging: each validation image's rotated copies are predicted by its
fold's classifier) and by prediction (predict.rotation_averaging, ``cntem predict --rotation-averaging``), through
the one function below. Kept free of torch, like the learning jobs that call it.
"""
from __future__ import annotations

import numpy as np

# Every rotation of an image that averaging takes, the original first.
TTA_ROTATIONS = (0, 90, 180, 270)


def average_over_rotations(keys, rotations, proba: np.ndarray) -> tuple[list, np.ndarray]:
    """The mean class probabilities of each key's four rotations -> (keys, probabilities (N, classes)).

    `keys` (an image id, a file index), `rotations` and `proba` are parallel, one row per (key, rotation), in any
    order; the keys are returned in the order they first appear. A key without exactly the four TTA_ROTATIONS is
    refused: an average over fewer would silently be another method.
    """
    rows = {}
    for index, (key, rotation) in enumerate(zip(keys, map(int, rotations))):
        rows.setdefault(key, {})
        if rotation in rows[key]:
            raise ValueError(f"{key!r} rotated {rotation}: given twice")
        rows[key][rotation] = index
    incomplete = {key: sorted(r) for key, r in rows.items() if sorted(r) != list(TTA_ROTATIONS)}
    if incomplete:
        key, have = next(iter(incomplete.items()))
        raise ValueError(f"rotation averaging needs rotations {list(TTA_ROTATIONS)} of every image; {len(incomplete)} "
                         f"image(s) lack some, e.g. {key!r} has {have}")
    proba = np.asarray(proba)
    # Summed in rotation order, whatever the rows' order: the same image gives the same average to the bit.
    averaged = np.stack([proba[[r[rotation] for rotation in TTA_ROTATIONS]].mean(0) for r in rows.values()]) \
        if rows else np.empty((0,) + proba.shape[1:], proba.dtype)
    return list(rows), averaged
