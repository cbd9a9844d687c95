"""Fusion (cntem.fusion): early fusion standardises on training rows only, late fusion by the mean is the members'
average, stacking and the selection of fused candidates read training rows only and record what they fitted on."""
import h5py
import numpy as np
import pytest

from cntem.classify import prediction_rows
from cntem.evaluate import LeakageError, check_leakage, run_leakage_records
from cntem.fusion import (BlockStandardized, combined_rows, fit_late_fusion, late_fused_fold, load_encoded_parts,
                          mean_probabilities)
from cntem.runs import Method
from cntem.selection import InnerSelection, candidate_representations, training_rows

CLASSES = ["Cl", "Fi", "Ma"]


class Recorder:
    """A classifier that records the rows it is fitted on (their groups) and predicts by the nearest class mean."""

    fitted_groups: list = []

    def __init__(self, classes=CLASSES):
        self.classes, self.info = list(classes), {}

    def fit(self, x, y, groups):
        Recorder.fitted_groups.append(set(groups))
        self.x_ = np.asarray(x)
        self.means_ = np.stack([self.x_[np.asarray(y) == c].mean(0) for c in self.classes])
        self.info = {"fit_seconds": 0.0}
        return self

    def predict_proba(self, x):
        score = -((np.asarray(x)[:, None, :] - self.means_[None]) ** 2).sum(-1)
        e = np.exp(score - score.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def separable(n_per_class=8, dims=(3, 5), seed=0, rotated=True):
    """Rows of three classes, one group per image, each image with its rotated copy (rotation 90): blocks of the
    given widths, the second block 100x the first's scale."""
    rng = np.random.default_rng(seed)
    ids, y, rotations, x = [], [], [], []
    for c, cls in enumerate(CLASSES):
        for i in range(n_per_class):
            centre = np.concatenate([np.full(d, 2.0 * c) * 10 ** (2 * b) for b, d in enumerate(dims)])
            for rotation in ((0, 90) if rotated else (0,)):
                ids.append(f"{cls}{i}")
                y.append(cls)
                rotations.append(rotation)
                x.append(centre + rng.normal(0, 1, sum(dims)) * np.repeat([10 ** (2 * b) for b in range(len(dims))],
                                                                          dims))
    return {"X": np.array(x, np.float32), "ids": ids, "y": y, "rotations": np.array(rotations)}


def test_early_fusion_standardises_each_block_on_the_fitting_rows_only():
    rows = separable()
    train = np.array([i for i, image in enumerate(rows["ids"]) if not image.endswith("0")])
    val = np.setdiff1d(np.arange(len(rows["ids"])), train)
    fused = BlockStandardized(Recorder(), [3, 5])
    fused.fit(rows["X"][train], [rows["y"][i] for i in train], [rows["ids"][i] for i in train])
    np.testing.assert_allclose(fused.mean_, rows["X"][train].mean(0), rtol=1e-6)
    assert not np.allclose(fused.mean_, rows["X"].mean(0), rtol=1e-3)  # the validation rows would move it
    scaled = fused.transform(rows["X"][train])
    # every block has unit total variance on the fitting rows, whatever its width and scale
    assert [float(scaled[:, :3].var(0).sum()), float(scaled[:, 3:].var(0).sum())] == pytest.approx([1, 1], rel=1e-4)
    np.testing.assert_allclose(fused.classifier.x_, scaled, rtol=1e-6)
    before = fused.predict_proba(rows["X"][val])
    fused.predict_proba(rows["X"])  # predicting refits nothing
    np.testing.assert_array_equal(fused.predict_proba(rows["X"][val]), before)
    assert fused.info["standardised_blocks"] == [3, 5]


def member_tables(seed):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(3), size=6)
    return prediction_rows([f"i{j}" for j in range(6)], ["0"] * 6, ["Cl", "Fi", "Ma", "Cl", "Fi", "Ma"], proba,
                           CLASSES)


def test_late_fusion_by_the_mean_is_exactly_the_members_average():
    method = Method.parse("squash-k8+squash-pooled/mean-xgboost")
    tables = [member_tables(1), member_tables(2)]
    fits = [{"classes": CLASSES, "train_ids": ["a", "b"], "fit_seconds": 1.0, "n_train": 2,
             "early_stopping_groups": ["b"]}, {"classes": CLASSES, "train_ids": ["a", "b"], "fit_seconds": 2.0,
                                               "n_train": 2}]
    rows, info, combiner = late_fused_fold(method, fits, tables, "0")
    members = [np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in t]) for t in tables]
    # the mean of what the members wrote, written as they are; the same combiner for their averaged predictions
    for fused in (rows, combined_rows(combiner, tables[::-1], CLASSES, "0")):
        assert [[r[f"p_{c}"] for c in CLASSES] for r in fused] == [[f"{v:.6f}" for v in p]
                                                                   for p in (members[0] + members[1]) / 2]
        assert [r["predicted"] for r in fused] == [CLASSES[int(np.argmax(p))] for p in (members[0] + members[1])]
    np.testing.assert_array_equal(mean_probabilities(members), (members[0] + members[1]) / 2)
    assert info["members"] == ["squash-k8/xgboost", "squash-pooled/xgboost"] and info["train_ids"] == []
    assert info["fitted"] == {"squash-k8/xgboost classifier": ["a", "b"], "squash-k8/xgboost early stopping": ["b"],
                              "squash-pooled/xgboost classifier": ["a", "b"]}
    assert info["fit_seconds"] == 3.0  # the members' fits: the mean fits nothing


def test_stacking_fits_on_training_rows_only_never_splits_a_group_and_is_leakage_checked():
    rows = separable(n_per_class=10)
    is_val = np.array([image[-1] in "01" for image in rows["ids"]])  # images 0 and 1 of each class
    train = {key: (v[~is_val] if isinstance(v, np.ndarray) else [e for e, m in zip(v, is_val) if not m])
             for key, v in rows.items()}
    group_of = {i: f"g-{i}" for i in rows["ids"]}
    Recorder.fitted_groups = []
    combiner, info = fit_late_fusion("stack", CLASSES, {"train": [train, train], "make": [Recorder, Recorder],
                                                       "group_of": group_of, "inner_folds": 3, "seed": 0, "C": 1.0})
    val_groups = {group_of[i] for i, m in zip(rows["ids"], is_val) if m}
    train_ids = set(train["ids"])
    assert len(Recorder.fitted_groups) == 6 and not set().union(*Recorder.fitted_groups) & val_groups
    assert set(info["fitted"]["stacking combiner"]) == train_ids == set(info["train_ids"])
    assert set(info["fitted"]["stacking inner fits"]) == train_ids
    for fold in info["inner_folds"]:  # an image and its rotated copy are predicted by a fit that saw neither
        assert not set(fold["fit_ids"]) & set(fold["predicted_ids"])
    proba = combiner.predict_proba([np.eye(3)[[0, 1, 2]], np.eye(3)[[0, 1, 2]]])
    assert proba.shape == (3, 3) and np.allclose(proba.sum(1), 1) and list(proba.argmax(1)) == [0, 1, 2]
    # the leakage check of the fused run covers the combiner and inner fits: clean here, caught when tampered
    plan = [{"id": i, "role": "val" if m else "train", "fold": "0"} for i, m in zip(rows["ids"], is_val)]
    folds = [{"id": i, "group": g} for i, g in group_of.items()]
    fit = {"train_ids": info["train_ids"], "fitted": info["fitted"]}
    assert check_leakage(run_leakage_records("s/rotate/x/stack-logistic", plan, folds, [fit], []))
    fit["fitted"] = {**info["fitted"], "stacking combiner": [*info["train_ids"], "Cl0"]}
    with pytest.raises(LeakageError, match="stacking combiner was fitted on"):
        check_leakage(run_leakage_records("s/rotate/x/stack-logistic", plan, folds, [fit], []))


def write_fold(path, rows, is_val):
    """An encoded fold file whose validation rows are NaN: reading them would poison every fit."""
    with h5py.File(path, "w") as h5:
        for name, mask in (("train", ~is_val), ("val", is_val)):
            g = h5.create_group(name)
            x = rows["X"][mask] if name == "train" else np.full_like(rows["X"][mask], np.nan)
            g.create_dataset("X", data=x)
            ids = [i for i, m in zip(rows["ids"], mask) if m]
            g.create_dataset("ids", data=np.array(ids, dtype=h5py.string_dtype()))
            g.create_dataset("rotations", data=rows["rotations"][mask].astype(np.int16))
            g.create_dataset("y", data=np.array([c for c, m in zip(rows["y"], mask) if m], dtype=h5py.string_dtype()))


def test_the_selection_scores_fused_candidates_on_outer_training_rows_only(tmp_path):
    rows = separable(n_per_class=9, dims=(4, 6))
    is_val = np.array([image.endswith("0") for image in rows["ids"]])
    pooled = {**rows, "X": rows["X"][:, :4]}
    vlad = {**rows, "X": rows["X"][:, 4:]}
    write_fold(tmp_path / "pooled.h5", pooled, is_val)
    write_fold(tmp_path / "vlad.h5", vlad, is_val)
    candidates = ["squash-k8/logistic", "squash-pooled/logistic", "squash-k8+squash-pooled/logistic",
                  "squash-k8+squash-pooled/mean-logistic", "squash-k8+squash-pooled/stack-logistic"]
    names = candidate_representations(candidates)
    assert names == ["squash-k8", "squash-pooled", "squash-k8+squash-pooled"]
    paths = {"squash-k8": [tmp_path / "vlad.h5"], "squash-pooled": [tmp_path / "pooled.h5"],
             "squash-k8+squash-pooled": [tmp_path / "vlad.h5", tmp_path / "pooled.h5"]}
    fused, blocks = load_encoded_parts(paths["squash-k8+squash-pooled"])
    assert blocks == [6, 4] and fused["train"]["X"].shape[1] == 10
    selection = InnerSelection(candidates, {"logistic": {"C_grid": [1.0], "inner_folds": 2}}, inner_folds=3,
                               stack={"C": 1.0, "inner_folds": 2, "seed": 0})
    selection.fit(training_rows(paths), {i: f"g-{i}" for i in rows["ids"]})
    assert list(selection.scores_) == candidates and selection.best_ in candidates
    assert all(np.isfinite(s["accuracy_mean"]) and s["accuracy_mean"] > 0.9 for s in selection.scores_.values())
    assert selection.used_ids_ == {i for i, m in zip(rows["ids"], is_val) if not m}


def test_a_fusion_with_a_hierarchical_member_has_its_class_tree_checked_when_the_config_loads():
    from pathlib import Path

    from snakemake.utils import validate

    from cntem.config import consistency_problems

    config = {"data": {"dir": "x"}, "schemes": ["odd"], "custom_schemes": {"odd": {"Cl": "A", "Fi": "B"}},
              "fusion": {"methods": ["squash-k50/mean-logistic+hierarchical"]}}
    validate(config, str(Path(__file__).resolve().parents[1] / "config" / "schema.yaml"), set_default=True)
    assert "hierarchical on scheme 'odd'" in consistency_problems(config)[0]
    assert consistency_problems({**config, "fusion": {"methods": ["squash-k50/mean-logistic+xgboost"]}}) == []
