"""Test-time averaging (beyond the paper): an image's class probabilities are the mean of the classifier's
probabilities for the image's copies under a group of symmetries of the square.

A TEM micrograph has no preferred orientation, but VGG16's features and so the classifier's output are not
invariant to rotations or reflections; averaging over a group makes the prediction invariant to it. Two groups:

- ``rot4``: the image and its 90/180/270-degree rotations;
- ``d8``: those and their four mirror images (the dihedral group of 8), twice the network time of ``rot4``.

An orientation is one int, as plans, manifests and shards store it (their ``rotation`` column): 0, 90, 180 and 270
rotate counter-clockwise; MIRRORED + r (360, 450, 540, 630) mirrors left-right first, then rotates by r. Rotation
balancing uses 90/180/270 only, so a store without mirrored entries keeps its meaning. The copies are the network
inputs transformed (:func:`orient`, through hypercolumns.prepare_image). Used by cross-validation
(evaluation.rotation_averaging and evaluation.averaging_group: each validation image's copies are predicted by its
fold's classifier) and by prediction (predict.rotation_averaging, ``cntem predict --averaging rot4|d8``),
through the one function :func:`average_over_group`. Kept free of torch, like the learning jobs that call it.
"""
from __future__ import annotations

import numpy as np

MIRRORED = 360
# Every orientation each group averages over, the original first.
GROUPS = {"rot4": (0, 90, 180, 270), "d8": (0, 90, 180, 270, MIRRORED, MIRRORED + 90, MIRRORED + 180, MIRRORED + 270)}


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """`image` (rows, cols[, channels]) in `orientation`: mirrored left-right when orientation >= MIRRORED, then
    rotated counter-clockwise by orientation mod 360 degrees (a view, not a copy)."""
    if int(orientation) not in GROUPS["d8"]:
        raise ValueError(f"orientation {orientation}: not one of {GROUPS['d8']}")
    mirrored, rotation = divmod(int(orientation), MIRRORED)
    return np.rot90(image[:, ::-1] if mirrored else image, k=rotation // 90)


def group_setting(value: bool | str) -> str:
    """predict.rotation_averaging as a group name: true means rot4 (the setting's meaning before d8), false ""."""
    return "rot4" if value is True else (value or "")


def copies(group: str) -> tuple[int, ...]:
    """The orientations of `group` other than the original: the copies averaging adds to each image."""
    return GROUPS[group][1:]


def average_over_group(keys, orientations, proba: np.ndarray, group: str) -> tuple[list, np.ndarray]:
    """The mean class probabilities of each key's orientations in `group` -> (keys, probabilities (N, classes)).

    `keys` (an image id, a file index), `orientations` and `proba` are parallel, one row per (key, orientation), in
    any order; the keys are returned in the order they first appear. A key without exactly the group's orientations
    is refused: an average over others would silently be another method.
    """
    expected = GROUPS[group]
    rows = {}
    for index, (key, orientation) in enumerate(zip(keys, map(int, orientations))):
        rows.setdefault(key, {})
        if orientation in rows[key]:
            raise ValueError(f"{key!r} in orientation {orientation}: given twice")
        rows[key][orientation] = index
    incomplete = {key: sorted(r) for key, r in rows.items() if sorted(r) != sorted(expected)}
    if incomplete:
        key, have = next(iter(incomplete.items()))
        raise ValueError(f"{group} averaging needs orientations {list(expected)} of every image; {len(incomplete)} "
                         f"image(s) lack some or have others, e.g. {key!r} has {have}")
    proba = np.asarray(proba)
    # Summed in the group's order, whatever the rows' order: the same image gives the same average to the bit.
    averaged = np.stack([proba[[r[o] for o in expected]].mean(0) for r in rows.values()]) \
        if rows else np.empty((0,) + proba.shape[1:], proba.dtype)
    return list(rows), averaged
