import numpy as np
from matplotlib.container import ErrorbarContainer

from cntem import plots


def _metrics(means, stds):
    classes = [f"C{i}" for i in range(len(means))]
    return {"classes": classes, "n_folds": 5, "accuracy": {"mean": float(np.mean(means)), "std": 0.05},
            "per_class_accuracy": {c: {"mean": m, "std": s} for c, m, s in zip(classes, means, stds)}}


def test_accuracy_grid_error_bars_stay_within_zero_and_one(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    metrics = {("rotate", "hcol"): _metrics([0.98, 0.5, 0.02], [0.1, 0.1, 0.1]),
               ("rotate", "baseline"): _metrics([0.9, 0.8, 0.7], [0.05, 0.05, 0.05])}
    plots.accuracy_grid(metrics, tmp_path / "grid.png", "3class")

    hcol_axis = saved[0].axes[1]
    (error_bars,) = [c for c in hcol_axis.containers if isinstance(c, ErrorbarContainer)]
    segments = error_bars.lines[2][0].get_segments()
    lows, highs = [s[:, 1].min() for s in segments], [s[:, 1].max() for s in segments]
    # Clipped at 1 and 0 where mean +- std would leave [0, 1]; untouched in between.
    np.testing.assert_allclose(lows, [0.88, 0.4, 0.0])
    np.testing.assert_allclose(highs, [1.0, 0.6, 0.12])
