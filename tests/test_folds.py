from collections import Counter, defaultdict

import pytest

from cntem.folds import assign_folds, balance_plan, fold_entries


def rows(counts, group_size=1):
    out = []
    for cls, n in counts.items():
        out += [{"id": f"{cls}{i}", "class": cls, "group": f"{cls}-g{i // group_size}"} for i in range(n)]
    return out


def test_singleton_groups_split_each_class_evenly():
    folds = assign_folds(rows({"Cl": 23, "Fi": 11, "Ma": 40}), 5, seed=1)
    per = Counter((r["class"], r["fold"]) for r in folds)
    for cls, n in {"Cl": 23, "Fi": 11, "Ma": 40}.items():
        sizes = [per[(cls, f)] for f in range(5)]
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1


def test_no_group_straddles_two_folds():
    folds = assign_folds(rows({"Cl": 30, "Fi": 24, "Ma": 36}, group_size=3), 4, seed=2)
    fold_of_group = defaultdict(set)
    for r in folds:
        fold_of_group[r["group"]].add(r["fold"])
    assert all(len(f) == 1 for f in fold_of_group.values())
    assert set(r["fold"] for r in folds) == {0, 1, 2, 3}


def test_folds_are_seeded():
    data = rows({"Cl": 20, "Fi": 20})
    assert assign_folds(data, 5, 3) == assign_folds(data, 5, 3)
    assert assign_folds(data, 5, 3) != assign_folds(data, 5, 4)


def test_rotation_balancing_stays_inside_training_folds():
    folds = assign_folds(rows({"Cl": 20, "Fi": 8, "Ma": 30}), 4, seed=0)
    fold_of = {r["id"]: r["fold"] for r in folds}
    plan = balance_plan(folds, "rotate", None, seed=0)
    for fold in range(4):
        split = fold_entries(plan, fold)
        train_counts = Counter(r["class"] for r in split["train"])
        assert len(set(train_counts.values())) == 1  # balanced to the largest class
        assert all(r["rotation"] == 0 for r in split["val"])  # validation never augmented
        assert all(fold_of[r["id"]] != fold for r in split["train"])  # copies follow their source
        assert {r["id"] for r in split["val"]} == {i for i, f in fold_of.items() if f == fold}
        copies = Counter((r["id"], r["rotation"]) for r in split["train"])
        assert max(copies.values()) == 1  # each (image, rotation) at most once
        assert {r["rotation"] for r in split["train"] if r["class"] == "Fi"} == {0, 90, 180, 270}


def test_per_class_target_caps_majority_and_none_keeps_imbalance():
    folds = assign_folds(rows({"Cl": 20, "Fi": 8, "Ma": 40}), 4, seed=0)
    capped = fold_entries(balance_plan(folds, "rotate", 20, seed=0), 0)["train"]
    assert Counter(r["class"] for r in capped) == {"Cl": 20, "Fi": 20, "Ma": 20}
    original = fold_entries(balance_plan(folds, "none", None, seed=0), 0)["train"]
    assert Counter(r["class"] for r in original) == {"Cl": 15, "Fi": 6, "Ma": 30}
    assert all(r["rotation"] == 0 for r in original)


@pytest.mark.parametrize("strategy", ["none", "rotate"])
def test_every_image_is_validated_exactly_once(strategy):
    folds = assign_folds(rows({"Cl": 10, "Fi": 6}), 3, seed=5)
    plan = balance_plan(folds, strategy, None, seed=5)
    val = Counter(r["id"] for r in plan if r["role"] == "val")
    assert set(val) == {r["id"] for r in folds} and set(val.values()) == {1}


def test_rotations_can_at_most_quadruple_a_class(caplog):
    folds = assign_folds(rows({"Fi": 4, "Ma": 40}), 4, seed=0)
    train = fold_entries(balance_plan(folds, "rotate", None, seed=0), 0)["train"]
    assert Counter(r["class"] for r in train) == {"Fi": 12, "Ma": 30}
    assert "reach only 12 of 30" in caplog.text
