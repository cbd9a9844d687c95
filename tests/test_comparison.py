"""The comparison of methods: one ranked row per cross-validated run, from the tidy metrics table."""
import random

from cntem.evaluate import COMPARISON_COLUMNS, comparison_rows


def tidy_run(scheme, balance, method, classifier, k, accuracy, macro_f1, fit_seconds, n_folds="5"):
    """The tidy table's rows of one run as read back from metrics.tsv (strings), with the rows comparison ignores."""
    base = {"scheme": scheme, "balance": balance, "method": method, "classifier": classifier, "k": k,
            "n_folds": n_folds, "config": "abc123"}
    rows = [{**base, "metric": metric, "class": "all", "mean": mean, "std": std}
            for metric, (mean, std) in [("accuracy", accuracy), ("macro_f1", macro_f1), ("fit_seconds", fit_seconds),
                                        ("predict_seconds", ("0.010000", "0.001000")),
                                        ("stage1_accuracy", ("0.990000", "0.010000"))]]
    return rows + [{**base, "metric": "class_accuracy", "class": c, "mean": "0.123000", "std": "0.050000"}
                   for c in ("Cl", "Fi")]


TIDY = [
    *tidy_run("8class", "rotate", "hcol", "xgboost", "50", ("0.800000", "0.040000"), ("0.700000", "0.050000"),
              ("12.500000", "1.000000")),
    *tidy_run("4class", "rotate", "hcol", "adaboost", "10", ("0.400000", "0.100000"), ("0.300000", "0.080000"),
              ("3.000000", "0.200000")),
    *tidy_run("4class", "rotate", "hcol", "xgboost", "50", ("0.900000", "0.030000"), ("0.850000", "0.020000"),
              ("20.000000", "2.000000")),
    *tidy_run("4class", "none", "baseline", "linear_softmax", "", ("0.950000", "0.080000"), ("0.940000", "0.010000"),
              ("0.500000", "0.100000")),
    *tidy_run("4class", "rotate", "pooled_hcol", "random_forest", "", ("0.900000", "0.060000"),
              ("0.880000", "0.040000"), ("1.500000", "0.300000")),
    *tidy_run("8class", "rotate", "pooled_hcol", "xgboost", "", ("0.850000", "0.020000"), ("0.800000", "0.030000"),
              ("4.000000", "0.500000")),
]


def test_one_row_per_run_sorted_by_scheme_then_accuracy_with_ranks_per_scheme():
    shuffled = random.Random(0).sample(TIDY, len(TIDY))
    rows = comparison_rows(shuffled, "squash")
    assert [(r["scheme"], r["representation"], r["classifier"], r["balance"], r["rank"]) for r in rows] == [
        ("4class", "VGG16 pooled top layer (baseline)", "linear_softmax", "none", 1),
        # equal accuracy: one rank, the higher macro-F1 first
        ("4class", "pooled hypercolumns", "random_forest", "rotate", 2),
        ("4class", "VLAD of hypercolumns, K=50", "xgboost", "rotate", 2),
        ("4class", "VLAD of hypercolumns, K=10", "adaboost", "rotate", 4),
        ("8class", "pooled hypercolumns", "xgboost", "rotate", 1),
        ("8class", "VLAD of hypercolumns, K=50", "xgboost", "rotate", 2),
    ]
    assert rows == comparison_rows(TIDY, "squash")  # the order of the tidy table does not matter


def test_rows_carry_the_tidy_tables_means_stds_fit_seconds_and_keys():
    rows = comparison_rows(TIDY, "squash")
    assert all(set(r) == set(COMPARISON_COLUMNS) for r in rows)
    vlad = next(r for r in rows if r["scheme"] == "4class" and r["k"] == "50")
    assert vlad == {"scheme": "4class", "rank": 2, "representation": "VLAD of hypercolumns, K=50",
                    "input_mode": "squash", "classifier": "xgboost", "balance": "rotate",
                    "accuracy_mean": "0.900000", "accuracy_std": "0.030000",
                    "macro_f1_mean": "0.850000", "macro_f1_std": "0.020000",
                    "fit_seconds": "20.000000", "n_folds": "5", "method": "hcol", "k": "50"}
    assert {r["input_mode"] for r in comparison_rows(TIDY, "center_crop")} == {"center_crop"}
