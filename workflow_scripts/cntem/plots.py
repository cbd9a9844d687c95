"""The paper's figures (matplotlib): each function writes a PNG and a PDF beside it."""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import read_grey  # noqa: E402
from .runs import Method  # noqa: E402
from .schemes import CLASS_NAMES, scheme_classes  # noqa: E402

BALANCE_TITLES = {"none": "original", "rotate": "augmented (90° rotations)"}


def method_title(run: dict) -> str:
    """A run's method in the paper's words ("VGG16 + 10% Hcol"), from its own record (a metrics.json: method name
    and extraction): the density, K, classifier, input mode and averaging it was run with."""
    method = Method.parse(run["method"])
    rep = method.representation
    if method.is_baseline:
        title = "VGG16 + LS"
    elif method.is_fused:
        title = f"VGG16 + {rep.name}, {method.estimator}"
    elif rep.kind == "vlad":
        title = f"VGG16 + {100 * run['extraction']['density']:g}% Hcol, K={rep.k}, {method.classifier}"
    else:
        title = f"VGG16 + pooled Hcol, {method.classifier}"
    title += f" ({rep.input_mode})"
    return f"{title}, {method.averaging}-averaged" if method.averaging else title


def cv_description(n_folds, n_repeats) -> str:
    """ "5-fold CV", or "5-fold CV x 4 repeats" for repeated cross-validation."""
    return f"{n_folds}-fold CV" + (f" × {n_repeats} repeats" if int(n_repeats) > 1 else "")


def _save(fig, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)


@functools.lru_cache(maxsize=1)
def _font_characters() -> frozenset[int]:
    """The code points the figures' font has glyphs for."""
    from matplotlib import font_manager, ft2font

    return frozenset(ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def drawable(text: str) -> str:
    """`text` with each character the figures' font cannot draw as '?': a file name in another script is shown
    that way, instead of a "Glyph missing" warning per character in the rule's output."""
    return "".join(c if c.isspace() or ord(c) in _font_characters() else "?" for c in text)


def _accuracy_error_bars(means, stds) -> list[np.ndarray]:
    """-std and +std bars, clipped to [0, 1]: accuracy lies there, mean +- std may not."""
    means, stds = np.asarray(means, dtype=float), np.asarray(stds, dtype=float)
    return [np.minimum(stds, means), np.minimum(stds, 1 - means)]


def pick_examples(images: list[dict], per_class: int, seed: int) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    by_class = {}
    for row in images:
        by_class.setdefault(row["class"], []).append(row)
    return {c: [rows[i] for i in sorted(rng.choice(len(rows), min(per_class, len(rows)), replace=False))]
            for c, rows in by_class.items()}


def contact_sheet(images: list[dict], path, per_class: int = 4, seed: int = 0) -> None:
    """A grid of example micrographs: one row per class."""
    examples = pick_examples(images, per_class, seed)
    classes = sorted(examples)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(2.2 * per_class, 2.3 * len(classes)), squeeze=False)
    for r, cls in enumerate(classes):
        for c in range(per_class):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(examples[cls]):
                row = examples[cls][c]
                ax.imshow(read_grey(row["path"]), cmap="gray")
                ax.set_title(f"{drawable(row['id'])}\n{row['width']}x{row['height']}, {row['bit_depth']}-bit",
                             fontsize=6)
        axes[r, 0].text(-0.08, 0.5, CLASS_NAMES.get(cls, cls), transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=9)
    fig.suptitle("Example micrographs per class", fontsize=11)
    _save(fig, path)


def accuracy_grid(runs: list[dict], path, scheme: str) -> None:
    """Fig. 8/9: per-class accuracy (mean +- std over splits); columns the methods (the paper: LS vs Hcol), rows
    the balance strategies (original vs augmented).

    runs: each run's metrics.json (evaluate.summarize with the run's method, balance and extraction)
    """
    balances = list(dict.fromkeys(m["balance"] for m in runs))
    methods = list(dict.fromkeys(m["method"] for m in runs))
    by_panel = {(m["balance"], m["method"]): m for m in runs}
    fig, axes = plt.subplots(len(balances), len(methods), figsize=(5 * len(methods), 3.8 * len(balances)),
                             squeeze=False, sharey=True)
    for r, balance in enumerate(balances):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            m = by_panel.get((balance, method))
            if m is None:
                ax.axis("off")
                continue
            classes = m["classes"]
            means = [m["per_class_accuracy"][k]["mean"] for k in classes]
            stds = [m["per_class_accuracy"][k]["std"] for k in classes]
            ax.bar(range(len(classes)), means, yerr=_accuracy_error_bars(means, stds), capsize=3,
                   color=plt.cm.tab10(np.arange(len(classes))))
            for i, v in enumerate(means):  # inside the bar's foot, clear of the error bar
                ax.text(i, 0.03, f"{100 * v:.0f}", ha="center", fontsize=8, color="white" if v > 0.1 else "black")
            ax.set_xticks(range(len(classes)), classes)
            ax.set_ylim(0, 1.1)
            acc = m["accuracy"]
            ax.set_title(f"{method_title(m)}, {BALANCE_TITLES.get(balance, balance)}\n"
                         f"total {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}%", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"accuracy ({cv_description(m['n_folds'], m['n_repeats'])})")
    fig.suptitle(f"Per-class classification accuracy, {scheme}", fontsize=11)
    fig.subplots_adjust(hspace=0.45)
    _save(fig, path)


def confusion_matrices(runs: list[dict], path, scheme: str) -> None:
    """Fig. 11: row-normalised confusion matrices with counts, one panel per run (its metrics.json), in order."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.2), squeeze=False)
    for ax, m in zip(axes[0], runs):
        norm, counts, classes = np.array(m["confusion_normalized"]), np.array(m["confusion"]), m["classes"]
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{norm[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=6.5,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{method_title(m)}\naccuracy {100 * m['accuracy']['mean']:.1f}%", fontsize=9)
    # Counts are summed over every split: with repeated CV each image is counted once per repeat.
    m = runs[0]
    fig.suptitle(f"Confusion matrices (validation images of all splits, {cv_description(m['n_folds'], m['n_repeats'])}"
                 f"), {scheme}", fontsize=11, y=1.04)
    _save(fig, path)


def tsne(panels: dict, path, scheme: str, perplexity: float, seed: int) -> None:
    """Fig. 10: t-SNE (after PCA to 50 dimensions) of VLAD vectors; panels: title -> (X, labels)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    for ax, (title, (x, labels)) in zip(axes[0], panels.items()):
        dims = min(50, x.shape[0] - 1, x.shape[1])
        reduced = PCA(n_components=dims, random_state=seed).fit_transform(x)
        emb = TSNE(n_components=2, perplexity=min(perplexity, (len(x) - 1) / 3), init="pca",
                   random_state=seed).fit_transform(reduced)
        labels = np.asarray(labels)
        for i, cls in enumerate(scheme_classes({c: c for c in set(labels)})):
            sel = labels == cls
            ax.scatter(emb[sel, 0], emb[sel, 1], s=9, color=plt.cm.tab10(i % 10), label=cls, alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5)
    fig.suptitle(f"t-SNE of VLAD vectors (validation images, PCA to 50-d first), {scheme}", fontsize=11)
    _save(fig, path)


def k_study(runs: list[dict], path_accuracy, path_time, scheme: str) -> None:
    """ESI Fig. S1 (accuracy vs K per classifier, error bars = std over folds) and S2 (fit time vs K); runs: each
    run's metrics.json."""
    by_clf = {}
    for m in runs:
        method = Method.parse(m["method"])
        by_clf.setdefault(method.classifier, []).append({"k": method.representation.k, "metrics": m})
    for path, key, ylabel, title in [
        (path_accuracy, "accuracy", "accuracy (mean ± std over folds)", "Accuracy vs dictionary size K"),
        (path_time, "fit_seconds", "fit time per fold [s] (mean ± std)", "Classifier fit time vs K"),
    ]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for clf, rows in sorted(by_clf.items()):
            rows = sorted(rows, key=lambda r: r["k"])
            ax.errorbar([r["k"] for r in rows], [r["metrics"][key]["mean"] for r in rows],
                        yerr=[r["metrics"][key]["std"] for r in rows], marker="o", capsize=3, label=clf)
        ax.set_xlabel("K (dictionary size)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}, {scheme}", fontsize=10)
        ax.legend()
        ax.grid(alpha=0.3)
        _save(fig, path)


def method_comparison(rows: list[dict], path, scheme: str, density: float | None = None) -> None:
    """Every cross-validated method of `scheme`, best at the top: accuracy bars (+- std over folds, clipped to
    [0, 1]) and macro-F1 as a marker; rows: evaluate.comparison_rows (of any schemes); `density`: the share of pixels
    whose hypercolumns were sampled, said in the title."""
    rows = sorted((r for r in rows if r["scheme"] == scheme), key=lambda r: int(r["rank"]))
    accuracy = [float(r["accuracy_mean"]) for r in rows]
    macro_f1 = [float(r["macro_f1_mean"]) for r in rows]
    y = np.arange(len(rows))[::-1]  # the first (best) row at the top
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(rows)))
    bars = ax.barh(y, accuracy, xerr=_accuracy_error_bars(accuracy, [float(r["accuracy_std"]) for r in rows]),
                   capsize=3, color="tab:blue", label="accuracy (± std over folds)")
    (markers,) = ax.plot(macro_f1, y, "D", color="tab:orange", markeredgecolor="black", markersize=5, zorder=3,
                         label="macro-F1")
    for yi, v in zip(y, accuracy):  # inside the bar's foot, clear of the error bar
        ax.text(0.01, yi, f"{100 * v:.1f}", va="center", fontsize=7, color="white" if v > 0.1 else "black")
    # The input mode is named when the scheme's methods span several (representations.input_modes).
    several_modes = len({r["input_mode"] for r in rows}) > 1
    ax.set_yticks(y, [" · ".join([r["label"], *([r["input_mode"]] if several_modes else []), r["classifier"],
                                  r["balance"]]) for r in rows], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel(f"mean over the splits of {cv_description(rows[0]['n_folds'], rows[0]['n_repeats'])}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[bars, markers], loc="lower left", bbox_to_anchor=(0, 1), ncol=2, fontsize=8, frameon=False)
    sampled = f" (hypercolumns at {100 * density:g}% of the pixels)" if density is not None else ""
    ax.set_title(f"Cross-validated methods, {scheme}{sampled}", fontsize=10, pad=22)
    _save(fig, path)


def misclassified_gallery(predictions: list[dict], images: dict, path, n: int) -> None:
    """The most confidently misclassified validation images."""
    wrong = sorted((r for r in predictions if r["true"] != r["predicted"]), key=lambda r: -float(r["confidence"]))[:n]
    cols = 4
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, wrong):
        ax.imshow(read_grey(images[r["id"]]), cmap="gray")
        ax.set_title(f"{drawable(r['id'])}\ntrue {r['true']} → {r['predicted']} "
                     f"({100 * float(r['confidence']):.0f}%)", fontsize=7)
    if not wrong:
        axes[0, 0].text(0.5, 0.5, "no misclassified validation image", ha="center", va="center")
    fig.suptitle("Most confidently misclassified validation images", fontsize=11)
    _save(fig, path)


def activation_maps(examples: list[tuple[str, np.ndarray, list[np.ndarray]]], taps: list[str], path) -> None:
    """Fig. 7: per class, the input and the channel-mean activation of each hypercolumn tap."""
    fig, axes = plt.subplots(len(examples), len(taps) + 1, figsize=(1.9 * (len(taps) + 1), 1.9 * len(examples)),
                             squeeze=False)
    for r, (cls, image, maps) in enumerate(examples):
        axes[r, 0].imshow(image, cmap="gray")
        axes[r, 0].set_ylabel(cls, fontsize=9)
        for c, m in enumerate(maps, start=1):
            axes[r, c].imshow(m, cmap="viridis")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for c, title in enumerate(["input"] + [t.replace("block", "b").replace("_conv", "c") for t in taps]):
        axes[0, c].set_title(title, fontsize=9)
    fig.suptitle("Hypercolumn components: mean activation of each tapped layer", fontsize=11)
    _save(fig, path)


# ---------------------------------------------------------------------- uncertainty (cntem.uncertainty)
def reliability_diagram(before: dict, after: dict, path, title: str) -> None:
    """Top-label reliability on held-out folds before and after calibration (calibration.reliability's dicts)."""
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(4.6, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centers = (before["edges"][:-1] + before["edges"][1:]) / 2
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    for curve, name, colour in ((before, "out-of-fold", "tab:red"), (after, "calibrated", "tab:blue")):
        seen = curve["counts"] > 0
        ax.plot(curve["confidence"][seen], curve["accuracy"][seen], "o-", color=colour, ms=4,
                label=f"{name} (ECE {curve['ece']:.3f})")
        bars.bar(centers + (0.008 if name == "calibrated" else -0.008), curve["counts"], width=0.016, color=colour)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    bars.set_xlabel("confidence (top-class probability)")
    bars.set_ylabel("micrographs")
    _save(fig, path)


def share_validation_figure(summary: list[dict], path, names: dict, level: float) -> None:
    """Per estimator and sample size, over the validation samples of every held-out fold: mean absolute error of the
    shares, and how often the interval held the true share."""
    sizes = sorted({r["size"] for r in summary if r["size"] != "all"})
    rows = {(r["estimator"], r["size"]): r for r in summary if r["scenario"] == "all"}
    estimators = list(dict.fromkeys(r["estimator"] for r in summary))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / len(sizes)
    x = np.arange(len(estimators))
    for i, size in enumerate(sizes):
        offset = (i - (len(sizes) - 1) / 2) * width
        axes[0].bar(x + offset, [rows[(e, size)]["mae"] for e in estimators], width, label=f"N = {size}")
        axes[1].bar(x + offset, [rows[(e, size)]["interval_coverage"] for e in estimators], width, label=f"N = {size}")
    axes[1].axhline(level, color="black", lw=0.8, ls="--", label=f"nominal {level:.0%}")
    axes[1].set_ylim(0, 1.02)
    axes[0].set_ylabel("mean absolute error per class")
    axes[1].set_ylabel("interval held the true share")
    for ax in axes:
        ax.set_xticks(x, [names[e] for e in estimators], rotation=25, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("Class shares of samples drawn from held-out folds with shifted class proportions", fontsize=10)
    _save(fig, path)


def shares_with_intervals(rows: list[dict], path, names: dict, level: float, title: str) -> None:
    """Each class's share by every estimator, with its interval; the default estimator filled, the others hollow."""
    classes = list(dict.fromkeys(r["class"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(classes) + 2), 3.4))
    width = 0.8 / max(len(estimators), 1)
    if not rows:
        ax.text(0.5, 0.5, "no micrograph classified", ha="center", va="center", transform=ax.transAxes)
    for i, estimator in enumerate(estimators):
        mine = {r["class"]: r for r in rows if r["estimator"] == estimator}
        share = np.array([mine[c]["share"] for c in classes])
        errors = [share - [mine[c]["lower"] for c in classes], [mine[c]["upper"] for c in classes] - share]
        default = mine[classes[0]]["default"] == "yes"
        ax.errorbar(np.arange(len(classes)) + (i - (len(estimators) - 1) / 2) * width, share, yerr=np.clip(errors, 0, 1),
                    fmt="o", mfc=None if default else "white", capsize=2, ms=5 if default else 4,
                    label=names[estimator] + (" (default)" if default else ""))
    ax.set_xticks(np.arange(len(classes)), classes)
    ax.set_ylabel(f"share of micrographs ({level:.0%} interval)")
    ax.set_ylim(0, 1)
    if rows:
        ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def review_gallery(rows: list[dict], path, n: int) -> None:
    """The `n` most doubtful flagged micrographs (rows of the review queue, most doubtful first)."""
    shown = rows[:n]
    cols, lines = 4, max(1, -(-len(shown) // 4))
    fig, axes = plt.subplots(lines, cols, figsize=(2.6 * cols, 2.8 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, shown):
        ax.imshow(read_grey(r["file"]), cmap="gray")
        ax.set_title(f"{Path(r['file']).name}\n{r['class']} ({100 * float(r['probability']):.0f}%), set {{{r['set']}}}",
                     fontsize=7)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no micrograph flagged for review", ha="center", va="center")
    fig.suptitle(f"Flagged for review: {len(rows)} micrographs (most doubtful first)", fontsize=11)
    _save(fig, path)
