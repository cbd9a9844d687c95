from collections import Counter, defaultdict

import pytest

from cntem.folds import assign_folds, balance_plan, fold_columns, fold_entries, repeat_seed, split_index


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


def test_repeat_zero_is_the_single_assignment_and_repeats_differ():
    from sklearn.model_selection import StratifiedGroupKFold

    data = rows({"Cl": 30, "Fi": 24, "Ma": 36}, group_size=3)
    single, repeated = assign_folds(data, 4, seed=2), assign_folds(data, 4, seed=2, repeats=3)
    assert [r["fold"] for r in repeated] == [r["fold"] for r in single]
    # ... and that is scikit-learn's assignment at cv.seed, as before repeats existed
    splits = StratifiedGroupKFold(4, shuffle=True, random_state=2).split(
        data, [r["class"] for r in data], [r["group"] for r in data])
    assert {i: f for f, (_, val) in enumerate(splits) for i in val} == {i: r["fold"] for i, r in enumerate(single)}
    assignments = [tuple(r[c] for r in repeated) for c in fold_columns(3)]
    assert fold_columns(3) == ["fold", "fold_r1", "fold_r2"] and len(set(assignments)) == 3
    assert repeated == assign_folds(data, 4, seed=2, repeats=3)  # seeded
    assert repeat_seed(2, 0) == 2 and len({repeat_seed(s, r) for s in (1, 2) for r in (1, 2)}) == 4


@pytest.mark.parametrize("group_size", [1, 3])
def test_no_group_straddles_folds_in_any_repeat(group_size):
    folds = assign_folds(rows({"Cl": 30, "Fi": 24, "Ma": 36}, group_size=group_size), 4, seed=2, repeats=3)
    for column in fold_columns(3):
        fold_of_group = defaultdict(set)
        for r in folds:
            fold_of_group[r["group"]].add(r[column])
        assert all(len(f) == 1 for f in fold_of_group.values()), column
        assert Counter(r[column] for r in folds).keys() == {0, 1, 2, 3}  # a full K-fold


def test_the_plan_has_every_split_of_every_repeat_without_leakage():
    data = rows({"Cl": 20, "Fi": 8, "Ma": 30}, group_size=2)
    folds = assign_folds(data, 4, seed=0, repeats=2)
    plan = balance_plan(folds, "rotate", None, seed=0)
    group_of = {r["id"]: r["group"] for r in data}
    assert {int(r["fold"]) for r in plan} == set(range(8))
    for repeat, column in enumerate(fold_columns(2)):
        for fold in range(4):
            split = fold_entries(plan, split_index(repeat, fold, 4))
            val_groups = {group_of[r["id"]] for r in split["val"]}
            assert {r["id"] for r in split["val"]} == {r["id"] for r in folds if r[column] == fold}
            assert not val_groups & {group_of[r["id"]] for r in split["train"]}  # nor any rotated copy
    # repeat 0's splits are the plan a single assignment gives
    single = balance_plan(assign_folds(data, 4, seed=0), "rotate", None, seed=0)
    assert [r for r in plan if int(r["fold"]) < 4] == single
