"""Group-aware, stratified cross-validation folds and the per-fold balancing plan.

Leakage rule: every entry derived from a micrograph (its rotated copies, its byte-identical
twins, tiles sharing a group) lives in the fold of its group. Validation entries are never
augmented (the rotated and mirrored copies test-time averaging predicts are validation entries, never trained on).
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from .tta import copies

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["id", "rotation", "class", "fold", "role"]
ROTATIONS = copies("rot4")  # rotation balancing's copies: 90, 180, 270 degrees
# The plan role of a validation image's rotated (and with d8 mirrored) copies (evaluation.rotation_averaging): predicted
# by the image's fold for test-time averaging only, never trained on, and like every validation entry in its image's
# fold.
VAL_ROTATED = "val_rotated"


def fold_columns(repeats: int) -> list[str]:
    """The folds table's column of each repeat's fold: ``fold`` (repeat 0, the paper's single assignment), then
    ``fold_r1``, ``fold_r2``, ..."""
    return ["fold"] + [f"fold_r{r}" for r in range(1, repeats)]


def fold_table_columns(repeats: int) -> list[str]:
    return ["id", "class", "group", *fold_columns(repeats)]


def repeat_seed(seed: int, repeat: int) -> int:
    """The fold-assignment seed of a repeat: `seed` itself for repeat 0, so that one repeat is exactly the
    single assignment; then one drawn from (seed, repeat), so that no two repeats share a seed whatever cv.seed is."""
    return seed if repeat == 0 else int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def assign_folds(rows: list[dict], n_folds: int, seed: int, repeats: int = 1) -> list[dict]:
    """Rows (with ``id``, ``class``, ``group``) -> the same rows with one fold in 0..n_folds-1 per repeat.

    Each repeat is a full stratified, group-aware K-fold with its own seed (:func:`repeat_seed`), in the
    column :func:`fold_columns` names.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # only this job needs it

    classes = np.array([r["class"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    out = [dict(r) for r in rows]
    for repeat, column in enumerate(fold_columns(repeats)):
        random_state = repeat_seed(seed, repeat)
        if len(set(groups)) == len(groups):
            # Singleton groups: plain stratified folds split every class evenly (+-1 per fold).
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
            splits = splitter.split(np.zeros(len(rows)), classes)
        else:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
            splits = splitter.split(np.zeros(len(rows)), classes, groups)
        for fold, (_, val_idx) in enumerate(splits):
            for i in val_idx:
                out[i][column] = fold
    return out


def split_index(repeat: int, fold: int, n_folds: int) -> int:
    """The number of a (repeat, fold) split: repeat x n_folds + fold, so repeat 0's splits are its folds, and a
    run's per-split targets (``fold<split>``) are those of a single K-fold when there is one repeat."""
    return repeat * n_folds + fold


def balanced_training_set(ids_by_class: dict[str, list[str]], strategy: str, per_class: int | None,
                          seed: int, key: int = 0) -> list[tuple[str, int, str]]:
    """(id, rotation, class) training entries, balanced by `strategy`.

    "none" keeps every image once. "rotate" is the paper's augmentation: a class below the target
    gets 90/180/270-degree rotated copies of its own images (at most three per image), and with
    ``per_class`` set a class above it is subsampled to the target. The target is ``per_class``
    or the largest class. `key` (the fold) makes the random choices differ between folds.
    """
    target = per_class or max(len(v) for v in ids_by_class.values())
    entries = []
    for cls in sorted(ids_by_class):
        rng = np.random.default_rng([seed, key, sum(map(ord, cls))])
        members = sorted(ids_by_class[cls])
        chosen = [(i, 0) for i in members]
        if strategy == "rotate":
            if len(members) > target:
                keep = rng.choice(len(members), size=target, replace=False)
                chosen = [(members[k], 0) for k in sorted(keep)]
            elif len(members) < target:
                order = [members[k] for k in rng.permutation(len(members))]
                copies = [(i, rot) for rot in ROTATIONS for i in order][: target - len(members)]
                if len(members) + len(copies) < target:
                    log.warning("class %s: %d images reach only %d of %d with rotations",
                                cls, len(members), len(members) + len(copies), target)
                chosen += copies
        entries += [(i, rot, cls) for i, rot in chosen]
    return entries


def balance_plan(folds: list[dict], strategy: str, per_class: int | None, seed: int) -> list[dict]:
    """The entries each split trains and validates on: rows ``id, rotation, class, fold, role``.

    ``fold`` is the split (:func:`split_index`) over every repeat the folds table holds. Training entries
    are balanced inside each training fold (see :func:`balanced_training_set`); validation entries are the
    fold's original images, never augmented.
    """
    n_folds = max(int(r["fold"]) for r in folds) + 1
    repeats = sum(1 for column in folds[0] if column == "fold" or column.startswith("fold_r"))
    plan = []
    for repeat, column in enumerate(fold_columns(repeats)):
        for fold in range(n_folds):
            split = split_index(repeat, fold, n_folds)
            by_class = defaultdict(list)
            for r in folds:
                if int(r[column]) == fold:
                    plan.append({"id": r["id"], "rotation": 0, "class": r["class"], "fold": split, "role": "val"})
                else:
                    by_class[r["class"]].append(r["id"])
            plan += [{"id": i, "rotation": rot, "class": cls, "fold": split, "role": "train"}
                     for i, rot, cls in balanced_training_set(by_class, strategy, per_class, seed, key=split)]
    return plan


def model_training_set(folds: list[dict], strategy: str, per_class: int | None, seed: int) -> list[dict]:
    """The final model's training entries: every labelled image, balanced as each training fold is.

    Rows ``id, rotation, class, fold, role`` like a plan's (fold -1, role train), so the manifest
    extracts exactly what the model will read.
    """
    by_class = defaultdict(list)
    for r in folds:
        by_class[r["class"]].append(r["id"])
    return [{"id": i, "rotation": rot, "class": cls, "fold": -1, "role": "train"}
            for i, rot, cls in balanced_training_set(by_class, strategy, per_class, seed)]


def entry_keys(rows: list[dict]) -> list[tuple[str, int]]:
    """(id, rotation) of plan rows: how hypercolumn stores and encoders name entries."""
    return [(r["id"], int(r["rotation"])) for r in rows]


def rotated_validation(plan: list[dict], group: str) -> list[dict]:
    """Plan rows (role VAL_ROTATED) of the copies of every validation image of `plan` in the other orientations of
    averaging `group` (tta.GROUPS), each in its image's fold: what test-time averaging predicts beside the image.
    Added to a plan, they also make the manifest extract those orientations."""
    return [{**r, "rotation": rot, "role": VAL_ROTATED} for r in plan if r["role"] == "val" for rot in copies(group)]


def fold_entries(plan: list[dict], fold: int, rotated: bool = False) -> dict[str, list[dict]]:
    """The plan rows of one split (a fold of some repeat, :func:`split_index`), by role: {"train": [...], "val": [...]},
    and with `rotated` the validation images' rotated (or mirrored) copies under VAL_ROTATED (only the jobs of
    averaged runs encode them)."""
    split = {"train": [], "val": [], **({VAL_ROTATED: []} if rotated else {})}
    for r in plan:
        if int(r["fold"]) == int(fold) and r["role"] in split:
            split[r["role"]].append({**r, "rotation": int(r["rotation"])})
    return split
