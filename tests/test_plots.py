import numpy as np
from matplotlib.container import ErrorbarContainer

from cntem import plots
from cntem.evaluate import comparison_rows

from test_comparison import TIDY, tidy_run


def _metrics(method, means, stds, density=0.1, n_repeats=1):
    """A run's metrics.json as the evaluate rule writes it (the parts the figures read)."""
    classes = [f"C{i}" for i in range(len(means))]
    return {"scheme": "3class", "balance": "rotate", "method": method, "extraction": {"density": density},
            "classes": classes, "n_folds": 5, "n_repeats": n_repeats,
            "accuracy": {"mean": float(np.mean(means)), "std": 0.05},
            "per_class_accuracy": {c: {"mean": m, "std": s} for c, m, s in zip(classes, means, stds)}}


def test_accuracy_grid_error_bars_stay_within_zero_and_one(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    runs = [_metrics("squash-top/linear_softmax", [0.9, 0.8, 0.7], [0.05, 0.05, 0.05]),
            _metrics("squash-k50/xgboost", [0.98, 0.5, 0.02], [0.1, 0.1, 0.1])]
    plots.accuracy_grid(runs, tmp_path / "grid.png", "3class")

    hcol_axis = saved[0].axes[1]
    (error_bars,) = [c for c in hcol_axis.containers if isinstance(c, ErrorbarContainer)]
    segments = error_bars.lines[2][0].get_segments()
    lows, highs = [s[:, 1].min() for s in segments], [s[:, 1].max() for s in segments]
    # Clipped at 1 and 0 where mean +- std would leave [0, 1]; untouched in between.
    np.testing.assert_allclose(lows, [0.88, 0.4, 0.0])
    np.testing.assert_allclose(highs, [1.0, 0.6, 0.12])


def test_method_comparison_draws_one_bar_per_method_of_the_scheme_best_at_the_top(tmp_path, monkeypatch):
    saved, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (saved.append(fig), save(fig, path)))
    path = tmp_path / "comparison.png"
    plots.method_comparison(comparison_rows(TIDY), path, "4class", density=0.025)

    assert path.stat().st_size > 5000 and path.with_suffix(".pdf").exists()
    (ax,) = saved[0].axes
    bars = sorted(ax.patches, key=lambda bar: -bar.get_y())  # top to bottom
    assert [bar.get_width() for bar in bars] == [0.95, 0.9, 0.9, 0.4]  # the 4 methods of 4class, not 8class's
    labels = [t.get_text() for t in sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])]
    assert labels[0] == "VGG16 pooled top layer (baseline) · linear_softmax · none"
    assert ax.get_xlabel() == "mean over the splits of 5-fold CV"
    assert ax.get_title() == "Cross-validated methods, 4class (hypercolumns at 2.5% of the pixels)"
    assert labels[3] == "VLAD of hypercolumns, K=10 · adaboost · rotate"
    (error_bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = sorted(error_bars.lines[2][0].get_segments(), key=lambda s: -s[0, 1])
    # the best's 0.95 +- 0.08 clipped at 1
    np.testing.assert_allclose([(s[:, 0].min(), s[:, 0].max()) for s in segments],
                               [(0.87, 1.0), (0.84, 0.96), (0.87, 0.93), (0.3, 0.5)])
    (f1_markers,) = [line for line in ax.lines if line.get_marker() == "D"]
    np.testing.assert_allclose(sorted(f1_markers.get_xdata()), [0.3, 0.85, 0.88, 0.94])


def test_method_comparison_names_the_input_mode_when_a_scheme_has_several(tmp_path, monkeypatch):
    saved, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (saved.append(fig), save(fig, path)))
    tiles = tidy_run("4class", "rotate", "tiles-pooled/random_forest", ("0.700000", "0.060000"),
                     ("0.680000", "0.040000"), ("1.500000", "0.300000"))
    plots.method_comparison(comparison_rows(TIDY + tiles), tmp_path / "comparison.png", "4class")
    labels = [t.get_text() for t in saved[0].axes[0].get_yticklabels()]
    assert "pooled hypercolumns · tiles · random_forest · rotate" in labels
    assert "pooled hypercolumns · squash · random_forest · rotate" in labels


def test_figures_say_what_was_run_density_input_mode_and_repeats(tmp_path, monkeypatch):
    """Titles come from each run's record: beyond.yaml's 2.5% density, not the paper's 10%; the tiles' input mode;
    4 repeats x 5 folds."""
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    runs = [_metrics("tiles-top/linear_softmax", [0.9, 0.8], [0.05, 0.05], density=0.025, n_repeats=4),
            _metrics("tiles-k50/logistic-rot4", [0.9, 0.8], [0.05, 0.05], density=0.025, n_repeats=4)]
    plots.accuracy_grid(runs, tmp_path / "grid.png", "3class")
    plots.confusion_matrices([{**r, "confusion": [[1, 0], [0, 1]], "confusion_normalized": [[1, 0], [0, 1]]}
                              for r in runs], tmp_path / "cm.png", "3class")
    grid, matrices = saved
    titles = [ax.get_title() for ax in grid.axes]
    assert titles[0].startswith("VGG16 + LS (tiles), augmented")
    assert titles[1].startswith("VGG16 + 2.5% Hcol, K=50, logistic (tiles), rot4-averaged, augmented")
    assert grid.axes[0].get_ylabel() == "accuracy (5-fold CV × 4 repeats)"
    assert "5-fold CV × 4 repeats" in matrices._suptitle.get_text()
    assert "10%" not in " ".join(titles)


def test_file_names_in_another_script_are_drawn_without_glyph_warnings(tmp_path):
    import warnings

    from conftest import write_image

    path = write_image(tmp_path / "样品-01.tif", seed=1)
    images = [{"id": "Cl/样品-01.tif", "path": str(path), "class": "Cl", "width": 48, "height": 40, "bit_depth": 8}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.contact_sheet(images, tmp_path / "sheet.png", per_class=1)
        plots.misclassified_gallery([{"id": "Cl/样品-01.tif", "true": "Cl", "predicted": "Fi", "confidence": "0.9"}],
                                    {"Cl/样品-01.tif": str(path)}, tmp_path / "wrong.png", 4)
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "sheet.png").exists() and (tmp_path / "wrong.png").exists()
    assert plots.drawable("Cl/样品-01 Fe₃O₄ µm.tif") == "Cl/??-01 Fe₃O₄ µm.tif"  # Latin, Greek, sub-scripts kept
