"""Test-time averaging over rot4 and d8: the averaging itself, a fold's averaged predictions, and the validation
copies in the plans and the manifest (never trained on, caught by the leakage check when they are)."""
import numpy as np
import pytest

from cntem.classify import Classifier, LinearSoftmaxSettings
from cntem.evaluate import (LeakageError, check_leakage, fit_and_predict_fold, group_averaged_rows,
                            run_leakage_records)
from cntem.folds import VAL_ROTATED, assign_folds, balance_plan, fold_entries, rotated_validation
from cntem.features import ExtractionSettings
from cntem.runs import AVERAGINGS
from cntem.shards import shard_manifest
from cntem.tta import GROUPS, MIRRORED, average_over_group, group_setting, orient

CLASSES = ["Cl", "Fi", "Ma"]


def test_the_groups_are_the_rotations_and_the_dihedral_group_of_the_square():
    """rot4 is closed under composition, d8 too, and d8 is rot4 with the mirror images: orienting an orientation of
    an asymmetric image gives another orientation of the group, and the eight are distinct."""
    image = np.arange(12).reshape(3, 4)
    for name, group in GROUPS.items():
        views = {o: orient(image, o).tobytes() for o in group}
        assert len(set(views.values())) == len(group)
        for a in group:
            for b in group:
                assert orient(orient(image, a), b).tobytes() in views.values(), (name, a, b)
    assert set(GROUPS["d8"]) == set(GROUPS["rot4"]) | {MIRRORED + o for o in GROUPS["rot4"]}
    assert set(AVERAGINGS) == set(GROUPS)  # every group has its method suffix
    assert (group_setting(True), group_setting(False), group_setting("d8")) == ("rot4", "", "d8")


@pytest.mark.parametrize("group", ["rot4", "d8"])
def test_average_is_the_mean_over_the_group_in_any_order(group):
    n = len(GROUPS[group])
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=2 * n)  # 2 images x the group's orientations
    keys = ["a"] * n + ["b"] * n
    orientations = list(GROUPS[group]) * 2
    ids, averaged = average_over_group(keys, orientations, proba, group)
    assert ids == ["a", "b"]
    np.testing.assert_array_equal(averaged, [proba[:n].mean(0), proba[n:].mean(0)])
    order = rng.permutation(2 * n)
    shuffled = average_over_group([keys[i] for i in order], [orientations[i] for i in order], proba[order], group)
    assert set(shuffled[0]) == {"a", "b"}
    for key, row in zip(*shuffled):  # summed in the group's order whatever the rows' order: equal to the bit
        np.testing.assert_array_equal(row, averaged[ids.index(key)])


@pytest.mark.parametrize("group, orientations, message", [
    ("rot4", [0, 90, 180], "lack some"), ("rot4", [0, 90, 90, 180, 270], "twice"),
    ("d8", [0, 90, 180, 270], "lack some"), ("rot4", list(GROUPS["d8"]), "have others")])
def test_an_image_without_exactly_the_groups_orientations_is_refused(group, orientations, message):
    with pytest.raises(ValueError, match=message):
        average_over_group(["a"] * len(orientations), orientations, np.full((len(orientations), 3), 1 / 3), group)


def test_a_folds_averaged_predictions_are_the_mean_of_its_classifiers_four_predictions():
    """The fold's classifier, fitted once, predicts the image and its rotated copies; each averaged row is the mean of
    those four probabilities, in the validation order, with the columns of the fold's own predictions."""
    rng = np.random.default_rng(1)
    train = {"X": rng.normal(size=(30, 6)) + np.repeat(np.eye(3, 6) * 3, 10, axis=0),
             "y": np.repeat(CLASSES, 10).tolist(), "ids": [f"t{i}" for i in range(30)]}
    val_ids = ["v2", "v0", "v1"]
    val = {"X": rng.normal(size=(3, 6)), "ids": val_ids, "rotations": [0, 0, 0], "y": ["Ma", "Cl", "Fi"]}
    rotated = {"X": rng.normal(size=(9, 6)), "ids": [i for i in val_ids for _ in range(3)],
               "rotations": [90, 180, 270] * 3, "y": [y for y in val["y"] for _ in range(3)]}
    classifier = Classifier(LinearSoftmaxSettings(), CLASSES)
    rows, _ = fit_and_predict_fold(classifier, train, val, {i: i for i in train["ids"] + val_ids}, 0)
    averaged = group_averaged_rows(classifier, val, rotated, 0, "rot4")
    assert [r["id"] for r in averaged] == val_ids and list(averaged[0]) == list(rows[0])
    assert [r["true"] for r in averaged] == val["y"]
    for n, row in enumerate(averaged):
        four = classifier.predict_proba(np.vstack([val["X"][n:n + 1], rotated["X"][3 * n:3 * n + 3]]))
        assert [float(row[f"p_{c}"]) for c in CLASSES] == pytest.approx(four.mean(0), abs=1e-6)
        assert row["predicted"] == CLASSES[int(four.mean(0).argmax())]
    assert any(r["p_Cl"] != a["p_Cl"] for r, a in zip(rows, averaged))  # the copies do change the answer


def tta_plan(strategy="rotate", group="rot4"):
    """A rotation-balanced 3-fold plan of 3 unequal classes, with the validation copies of `group`."""
    rows = [{"id": f"{c}{i}", "class": c, "group": f"{c}{i}"} for c, n in zip(CLASSES, (4, 7, 10)) for i in range(n)]
    plan = balance_plan(assign_folds(rows, 3, seed=0), strategy, None, seed=0)
    return rows, plan + rotated_validation(plan, group)


@pytest.mark.parametrize("group", ["rot4", "d8"])
def test_rotated_validation_copies_stay_in_their_fold_and_never_train(group):
    _, plan = tta_plan(group=group)
    for fold in range(3):
        split = fold_entries(plan, fold, rotated=True)
        val_ids = {r["id"] for r in split["val"]}
        assert {(r["id"], r["rotation"]) for r in split[VAL_ROTATED]} == \
            {(i, rot) for i in val_ids for rot in GROUPS[group][1:]}
        assert not {r["id"] for r in split["train"]} & val_ids  # neither an image nor any copy of it trains
        assert any(r["rotation"] for r in split["train"])  # the rotation balancing's own copies do
        assert VAL_ROTATED not in fold_entries(plan, fold)  # only the rotation-averaged runs' jobs read them


def test_the_leakage_check_treats_rotated_copies_as_their_image():
    rows, plan = tta_plan()
    fits = [{"train_ids": sorted({r["id"] for r in fold_entries(plan, f)["train"]})} for f in range(3)]
    assert len(check_leakage(run_leakage_records("tiny/rotate/squash-k8/xgboost-rot4", plan, rows, fits, []))) == 3
    # A fold-0 validation image's rotated copy trained on in fold 0 is leakage, as the image itself would be.
    copy = next(r for r in plan if r["role"] == VAL_ROTATED and r["fold"] == 0)
    leaky = plan + [{**copy, "role": "train"}]
    fits_leaky = [{"train_ids": sorted({r["id"] for r in fold_entries(leaky, f)["train"]})} for f in range(3)]
    with pytest.raises(LeakageError, match="fold0: classifier"):
        check_leakage(run_leakage_records("run", leaky, rows, fits_leaky, []))
    # A rotated copy predicted by a fold that trains on its image is leakage too.
    trained_in_1 = next(r for r in plan if r["role"] == "train" and r["fold"] == 1)
    misplaced = plan + [{**trained_in_1, "rotation": 90, "role": VAL_ROTATED}]
    with pytest.raises(LeakageError, match="fold1: classifier"):
        check_leakage(run_leakage_records("run", misplaced, rows, fits, []))



@pytest.mark.parametrize("group", ["rot4", "d8"])
def test_the_manifest_extracts_the_groups_copies_of_every_image(group):
    """A plan averaged over `group` (here without rotation balancing) makes the store hold every image in each of the
    group's orientations, beside the plain plan of another strategy: what the fold jobs of any fold assignment read."""
    rows, averaged = tta_plan(strategy="none", group=group)
    plain = balance_plan(assign_folds(rows, 3, seed=1), "none", None, seed=0)
    images = [{"id": r["id"], "path": f"/data/{r['id']}.tif", "width": 32, "height": 32} for r in rows]
    manifest = shard_manifest(images, [plain, averaged], 2, ExtractionSettings(image_size=32))
    assert sorted((m["id"], m["rotation"]) for m in manifest) == sorted(
        (r["id"], o) for r in rows for o in GROUPS[group])
    assert {(m["id"], m["rotation"]) for m in shard_manifest(images, [plain], 2, ExtractionSettings(image_size=32))} \
        == {(r["id"], 0) for r in rows}
