"""The comparison of methods: one ranked row per cross-validated run, from the tidy metrics table."""
import random

from cntem.evaluate import COMPARISON_COLUMNS, comparison_rows
from cntem.runs import Method, Run


def tidy_run(scheme, balance, method, accuracy, macro_f1, fit_seconds, n_folds="5", n_repeats="1"):
    """The tidy table's rows of one run (a method's name) as read back from metrics.tsv (strings), with the rows
    comparison ignores; the std across repeats is a tenth of the std over splits."""
    base = {**Run(scheme, balance, Method.parse(method)).columns(), "n_folds": n_folds, "n_repeats": n_repeats,
            "config": "abc123"}
    rows = [{**base, "metric": metric, "class": "all", "mean": mean, "std": std, "repeat_std": f"{float(std) / 10:.6f}"}
            for metric, (mean, std) in [("accuracy", accuracy), ("macro_f1", macro_f1), ("fit_seconds", fit_seconds),
                                        ("predict_seconds", ("0.010000", "0.001000")),
                                        ("stage1_accuracy", ("0.990000", "0.010000"))]]
    return rows + [{**base, "metric": "class_accuracy", "class": c, "mean": "0.123000", "std": "0.050000",
                    "repeat_std": "0.005000"}
                   for c in ("Cl", "Fi")]


TIDY = [
    *tidy_run("8class", "rotate", "squash-k50/xgboost", ("0.800000", "0.040000"), ("0.700000", "0.050000"),
              ("12.500000", "1.000000")),
    *tidy_run("4class", "rotate", "squash-k10/adaboost", ("0.400000", "0.100000"), ("0.300000", "0.080000"),
              ("3.000000", "0.200000")),
    *tidy_run("4class", "rotate", "squash-k50/xgboost", ("0.900000", "0.030000"), ("0.850000", "0.020000"),
              ("20.000000", "2.000000"), n_repeats="3"),
    *tidy_run("4class", "none", "squash-top/linear_softmax", ("0.950000", "0.080000"), ("0.940000", "0.010000"),
              ("0.500000", "0.100000")),
    *tidy_run("4class", "rotate", "squash-pooled/random_forest", ("0.900000", "0.060000"),
              ("0.880000", "0.040000"), ("1.500000", "0.300000")),
    *tidy_run("8class", "rotate", "squash-pooled/xgboost", ("0.850000", "0.020000"), ("0.800000", "0.030000"),
              ("4.000000", "0.500000")),
]


def test_one_row_per_run_sorted_by_scheme_then_accuracy_with_ranks_per_scheme():
    shuffled = random.Random(0).sample(TIDY, len(TIDY))
    rows = comparison_rows(shuffled)
    assert [(r["scheme"], r["method"], r["balance"], r["rank"]) for r in rows] == [
        ("4class", "squash-top/linear_softmax", "none", 1),
        # equal accuracy: one rank, the higher macro-F1 first
        ("4class", "squash-pooled/random_forest", "rotate", 2),
        ("4class", "squash-k50/xgboost", "rotate", 2),
        ("4class", "squash-k10/adaboost", "rotate", 4),
        ("8class", "squash-pooled/xgboost", "rotate", 1),
        ("8class", "squash-k50/xgboost", "rotate", 2),
    ]
    assert rows == comparison_rows(TIDY)  # the order of the tidy table does not matter


def test_rows_carry_the_tidy_tables_means_stds_fit_seconds_and_the_methods_parts():
    rows = comparison_rows(TIDY)
    assert all(set(r) == set(COMPARISON_COLUMNS) for r in rows)
    vlad = next(r for r in rows if r["scheme"] == "4class" and r["k"] == "50")
    assert vlad == {"scheme": "4class", "rank": 2, "method": "squash-k50/xgboost", "label": "VLAD of hypercolumns, K=50",
                    "input_mode": "squash", "representation": "vlad", "k": "50", "classifier": "xgboost",
                    "averaging": "", "balance": "rotate",
                    "accuracy_mean": "0.900000", "accuracy_std": "0.030000", "accuracy_repeat_std": "0.003000",
                    "macro_f1_mean": "0.850000", "macro_f1_std": "0.020000", "macro_f1_repeat_std": "0.002000",
                    "fit_seconds": "20.000000", "n_folds": "5", "n_repeats": "3"}
    # The same method in another input mode is a run of its own, ranked with the rest.
    tiles = tidy_run("8class", "rotate", "tiles-pooled/xgboost", ("0.950000", "0.020000"),
                     ("0.900000", "0.030000"), ("9.000000", "0.500000"))
    eight = [r for r in comparison_rows(TIDY + tiles) if r["scheme"] == "8class"]
    assert [(r["input_mode"], r["label"], r["rank"]) for r in eight] == [
        ("tiles", "pooled hypercolumns", 1), ("squash", "pooled hypercolumns", 2),
        ("squash", "VLAD of hypercolumns, K=50", 3)]


def test_rotation_averaged_runs_are_methods_of_their_own():
    """A run evaluated with rotation averaging (<method>-rot4) is its own row beside the run of the same fits,
    named as its representation averaged over 4 rotations."""
    tta = [*tidy_run("4class", "rotate", "squash-k50/xgboost-rot4", ("0.920000", "0.020000"),
                     ("0.870000", "0.020000"), ("20.000000", "2.000000")),
           *tidy_run("4class", "none", "squash-top/linear_softmax-rot4", ("0.960000", "0.070000"),
                     ("0.950000", "0.010000"), ("0.500000", "0.100000")),
           *tidy_run("8class", "rotate", "squash-pooled/logistic-rot4", ("0.860000", "0.020000"),
                     ("0.810000", "0.030000"), ("4.000000", "0.500000"))]
    rows = comparison_rows(TIDY + tta)
    named = {(r["scheme"], r["method"]): (r["label"], r["averaging"]) for r in rows}
    assert named[("4class", "squash-k50/xgboost-rot4")] == ("VLAD of hypercolumns, K=50, averaged over 4 rotations",
                                                            "rot4")
    assert named[("4class", "squash-k50/xgboost")] == ("VLAD of hypercolumns, K=50", "")
    assert named[("4class", "squash-top/linear_softmax-rot4")] == (
        "VGG16 pooled top layer (baseline), averaged over 4 rotations", "rot4")
    assert named[("8class", "squash-pooled/logistic-rot4")] == ("pooled hypercolumns, averaged over 4 rotations",
                                                                "rot4")
    assert len(rows) == len(comparison_rows(TIDY)) + 3
