"""Group-aware, stratified cross-validation folds and the per-fold balancing plan.

Leakage rule: every entry derived from a micrograph (its rotated copies, its byte-identical
twins, tiles sharing a group) lives in the fold of its group. Validation entries are never
augmented.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

log = logging.getLogger(__name__)

FOLD_COLUMNS = ["id", "class", "group", "fold"]
PLAN_COLUMNS = ["id", "rotation", "class", "fold", "role"]
ROTATIONS = (90, 180, 270)


def assign_folds(rows: list[dict], n_folds: int, seed: int) -> list[dict]:
    """Rows (with ``id``, ``class``, ``group``) -> the same rows with a ``fold`` in 0..n_folds-1."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # only this job needs it

    ids = [r["id"] for r in rows]
    classes = np.array([r["class"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    if len(set(groups)) == len(groups):
        # Singleton groups: plain stratified folds split every class evenly (+-1 per fold).
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(ids)), classes)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(ids)), classes, groups)
    fold_of = np.full(len(ids), -1)
    for fold, (_, val_idx) in enumerate(splits):
        fold_of[val_idx] = fold
    return [{**r, "fold": int(f)} for r, f in zip(rows, fold_of)]


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
    """The entries each fold trains and validates on: rows ``id, rotation, class, fold, role``.

    Training entries are balanced inside each training fold (see :func:`balanced_training_set`);
    validation entries are the fold's original images, never augmented.
    """
    n_folds = max(int(r["fold"]) for r in folds) + 1
    plan = []
    for fold in range(n_folds):
        by_class = defaultdict(list)
        for r in folds:
            if int(r["fold"]) == fold:
                plan.append({"id": r["id"], "rotation": 0, "class": r["class"], "fold": fold, "role": "val"})
            else:
                by_class[r["class"]].append(r["id"])
        plan += [{"id": i, "rotation": rot, "class": cls, "fold": fold, "role": "train"}
                 for i, rot, cls in balanced_training_set(by_class, strategy, per_class, seed, key=fold)]
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


def fold_entries(plan: list[dict], fold: int) -> dict[str, list[dict]]:
    """The plan rows of one fold, split by role: {"train": [...], "val": [...]}."""
    split = {"train": [], "val": []}
    for r in plan:
        if int(r["fold"]) == int(fold):
            split[r["role"]].append({**r, "rotation": int(r["rotation"])})
    return split
