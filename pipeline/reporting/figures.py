"""The visualize stage's figures: pure functions from arrays and tables to matplotlib
Figures, so tests can draw them from small generated data.

Each figure carries its own title, axis labels and class names, so it reads on its own
in `dvc plots show`'s page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display, and the fastest backend for PNG files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from pipeline import IMAGE_SHAPE  # noqa: E402
from pipeline.core.paths import CURVE_METRICS  # noqa: E402
from pipeline.tuning.reports import COMPLETE, FINISHED_NAMES, PRUNED  # noqa: E402

GAP = 2  # pixels between images in a row of samples
RIGHT, WRONG = "#1a7f37", "#cf222e"


def save(fig: Figure, path: str | Path, dpi: int) -> None:
    """PNG with nothing clipped; the figure is closed to free its memory."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)


def _display_range(images: np.ndarray) -> tuple[float, float]:
    """One grey scale for all images, whether the pixels were scaled or standardized."""
    if images.size == 0:
        return 0.0, 1.0
    low, high = float(images.min()), float(images.max())
    return low, high if high > low else low + 1.0


# --- data ---------------------------------------------------------------------------


def class_distribution(labels_by_split: Mapping[str, np.ndarray],
                       class_names: Sequence[str]) -> Figure:
    """One bar chart per split, so the small validation split is not dwarfed by train."""
    fig, axes = plt.subplots(1, len(labels_by_split), figsize=(4.2 * len(labels_by_split), 4.2),
                             sharey=True, squeeze=False, layout="constrained")
    positions = np.arange(len(class_names))
    for ax, (split, labels) in zip(axes[0], labels_by_split.items()):
        counts = np.bincount(labels, minlength=len(class_names))[:len(class_names)]
        bars = ax.barh(positions, counts, color="#4c72b0")
        ax.bar_label(bars, fmt="{:,.0f}", padding=2, fontsize=8)
        ax.set_title(f"{split} ({len(labels):,} images)")
        ax.set_xlabel("images")
        ax.set_xlim(0, max(1, counts.max()) * 1.22)
    axes[0, 0].set_yticks(positions, class_names)
    axes[0, 0].invert_yaxis()
    axes[0, 0].set_ylabel("class")
    fig.suptitle("Class distribution per split")
    return fig


def _strip(images: np.ndarray, count: int, background: float) -> np.ndarray:
    """`count` 28x28 tiles side by side with a gap; missing tiles stay background."""
    height, width = IMAGE_SHAPE
    strip = np.full((height, count * (width + GAP) - GAP), background, dtype=np.float32)
    for i, image in enumerate(images[:count]):
        left = i * (width + GAP)
        strip[:, left:left + width] = image.reshape(IMAGE_SHAPE)
    return strip


def sample_images(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                  per_class: int) -> Figure:
    """The first `per_class` images of each class, one row per class."""
    low, high = _display_range(images)
    fig, axes = plt.subplots(len(class_names), 1, figsize=(0.75 * per_class + 1.6,
                                                         0.8 * len(class_names) + 0.8),
                             squeeze=False, layout="constrained")
    for label, (ax, name) in enumerate(zip(axes[:, 0], class_names)):
        chosen = images[labels == label][:per_class]
        ax.imshow(_strip(chosen, per_class, low), cmap="gray_r", vmin=low, vmax=high,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        if len(chosen) < per_class:
            ax.set_xlabel(f"only {len(chosen)} image(s)", fontsize=7)
    fig.suptitle(f"Sample training images, up to {per_class} per class")
    return fig


# --- training -----------------------------------------------------------------------


def training_curves(curves: Mapping[str, pd.DataFrame],
                    test_accuracy: Mapping[str, float] | None = None) -> Figure:
    """Accuracy and loss per epoch, train vs validation; one column per model.

    Each frame has columns epoch, train_accuracy, val_accuracy, train_loss, val_loss.
    The dotted line marks the best validation epoch (the weights early stopping keeps).
    """
    test_accuracy = test_accuracy or {}
    fig, axes = plt.subplots(len(CURVE_METRICS), len(curves),
                             figsize=(5.2 * len(curves), 7.0), sharey="row", squeeze=False,
                             layout="constrained")
    for col, (model, frame) in enumerate(curves.items()):
        best_epoch = int(frame["epoch"][frame["val_accuracy"].idxmax()])
        for row, metric in enumerate(CURVE_METRICS):
            ax = axes[row, col]
            ax.plot(frame["epoch"], frame[f"train_{metric}"], "o-", ms=3, label="train")
            ax.plot(frame["epoch"], frame[f"val_{metric}"], "s--", ms=3, label="validation")
            ax.axvline(best_epoch, color="grey", linestyle=":",
                       label=f"best validation epoch ({best_epoch})")
            heading = f"{model}: {metric}"
            if row == 0 and model in test_accuracy:
                heading += f" (test accuracy {test_accuracy[model]:.4f})"
            ax.set_title(heading)
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Training curves per epoch: train vs validation")
    return fig


# --- test predictions ---------------------------------------------------------------


def confusion_heatmap(confusion: pd.DataFrame, title: str) -> Figure:
    """Rows normalized by the true class: the diagonal is each class's recall. Drawn by
    scikit-learn's ConfusionMatrixDisplay; a cell no test image fell in stays blank."""
    counts = confusion.to_numpy(dtype=np.float64)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    fig, ax = plt.subplots(figsize=(8.6, 7.4), layout="constrained")
    shown = ConfusionMatrixDisplay(shares, display_labels=list(confusion.columns)).plot(
        ax=ax, cmap="Blues", values_format=".2f", colorbar=False, xticks_rotation=40,
        im_kw={"vmin": 0.0, "vmax": 1.0}, text_kw={"fontsize": 8})
    for (row, col), text in np.ndenumerate(shown.text_):
        share = shares[row, col]
        text.set_text("" if counts[row, col] == 0 else "<.01" if share < 0.005 else
                      f"{share:.2f}")
    ax.set_xticks(range(len(confusion.columns)), list(confusion.columns), rotation=40,
                  ha="right")
    ax.set_yticks(range(len(confusion.index)), list(confusion.index))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(shown.im_, ax=ax, label="share of the true class's test images")
    return fig


def predictions_gallery(images: np.ndarray, predictions: pd.DataFrame, title: str,
                        columns: int = 6) -> Figure:
    """Test images with true label, predicted label and confidence; wrong ones in red.

    `predictions` has one row per image in `images`: actual, predicted, confidence, correct.
    """
    count = len(predictions)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    low, high = _display_range(images)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.25 * rows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[count:]:
        ax.axis("off")
    for ax, image, row in zip(axes.flat, images, predictions.itertuples(index=False)):
        colour = RIGHT if row.correct else WRONG
        ax.imshow(image.reshape(IMAGE_SHAPE), cmap="gray_r", vmin=low, vmax=high)
        ax.set_xticks([])
        ax.set_yticks([])
        mark = "" if row.correct else "WRONG: "
        ax.set_title(f"true: {row.actual}\n{mark}pred: {row.predicted}\n"
                     f"confidence {row.confidence:.0%}", fontsize=8, color=colour)
        for spine in ax.spines.values():
            spine.set_color(colour)
            spine.set_linewidth(1 if row.correct else 3)
    fig.suptitle(title)
    return fig


# --- tuning -------------------------------------------------------------------------
# The tables are tune's reports (pipeline/tuning/reports.py): trials have number, state,
# value and one column per searched setting; curves have number, epoch, val_accuracy.

PRUNED_COLOUR, BEST_COLOUR = "#8c8c8c", WRONG


def _accuracy_floor(values: pd.Series, complete: pd.Series) -> float:
    """A lower y limit that keeps the interesting range readable: a trial pruned at 20%
    accuracy would squash every complete trial into one line."""
    reference = complete if len(complete) else values
    return max(0.0, min(float(reference.min()), float(values.median())) - 0.02)


def optimization_history(trials: pd.DataFrame) -> Figure:
    """Each finished trial's validation accuracy in the order run, and the best complete
    trial so far: the curve a search should push up."""
    finished = trials[trials["state"].isin(FINISHED_NAMES)]
    complete = finished[finished["state"] == COMPLETE]
    pruned = finished[finished["state"] == PRUNED]
    fig, ax = plt.subplots(figsize=(8.4, 4.8), layout="constrained")
    floor = _accuracy_floor(finished["value"], complete["value"])
    shown_pruned = pruned["value"].clip(lower=floor)
    ax.scatter(pruned["number"], shown_pruned, marker="x", color=PRUNED_COLOUR,
               label="pruned (accuracy where it stopped; clipped at the bottom)")
    ax.scatter(complete["number"], complete["value"], color="#4c72b0", edgecolor="black",
               linewidth=0.4, zorder=3, label="complete (final accuracy)")
    best_so_far = finished["value"].where(finished["state"] == COMPLETE).cummax().ffill()
    ax.step(finished["number"], best_so_far, where="post", color=BEST_COLOUR,
            label="best complete trial so far")
    if len(complete):
        best = complete.loc[complete["value"].idxmax()]
        ax.scatter([best["number"]], [best["value"]], s=220, facecolors="none",
                   edgecolors=BEST_COLOUR, linewidth=2, zorder=4,
                   label=f"best: trial {int(best['number'])}, {best['value']:.4f}")
    ax.set_ylim(bottom=floor)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Tuning history: {len(finished)} trials, {len(complete)} complete, "
                 f"{len(pruned)} pruned")
    return fig


def trial_curves(curves: pd.DataFrame, trials: pd.DataFrame) -> Figure:
    """Validation accuracy after every epoch of every trial: complete trials in colour,
    pruned ones in grey up to the epoch where the pruner stopped them (x)."""
    states = dict(zip(trials["number"], trials["state"]))
    values = dict(zip(trials["number"], trials["value"]))
    complete = [n for n, s in states.items() if s == COMPLETE]
    best = max(complete, key=lambda n: values[n]) if complete else None
    fig, ax = plt.subplots(figsize=(8.4, 5.0), layout="constrained")
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, max(1, len(complete))))
    colour_of = dict(zip(complete, colours))
    stops = set()
    for number, curve in curves.groupby("number"):
        state = states.get(number)
        if state == PRUNED:
            ax.plot(curve["epoch"], curve["val_accuracy"], color=PRUNED_COLOUR, lw=0.8,
                    alpha=0.7, gid=f"trial {number}")
            ax.plot(curve["epoch"].iloc[-1], curve["val_accuracy"].iloc[-1], "x",
                    color=PRUNED_COLOUR, ms=6)
            stops.add(int(curve["epoch"].iloc[-1]))
        elif state == COMPLETE:
            ax.plot(curve["epoch"], curve["val_accuracy"], "-o", ms=2.5,
                    lw=2.6 if number == best else 1.2,
                    color=BEST_COLOUR if number == best else colour_of[number],
                    label=f"trial {number}" + (" (best)" if number == best else ""), zorder=3,
                    gid=f"trial {number}")
    for epoch in sorted(stops):
        ax.axvline(epoch, color=PRUNED_COLOUR, linestyle=":", lw=0.8)
    ax.plot([], [], "x-", color=PRUNED_COLOUR, lw=0.8,
            label=f"pruned trials ({sum(s == PRUNED for s in states.values())}), "
                  f"x where stopped")
    ax.set_ylim(bottom=_accuracy_floor(curves["val_accuracy"],
                                       trials.loc[trials["state"] == COMPLETE, "value"]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2, loc="lower right")
    ax.set_title("Validation accuracy per epoch of every trial; dotted lines: epochs where "
                 "the pruner stopped trials", fontsize=10)
    return fig


def _axis_positions(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values mapped to [0, 1] for one parallel axis, and the (position, label) ticks.
    Numbers spread linearly, or by their logarithm when they span over a decade;
    anything else (layer strings, true/false) as evenly spaced categories."""
    numbers = pd.to_numeric(values, errors="coerce")
    is_numeric = numbers.notna().all() and values.map(lambda v: not isinstance(v, bool)).all()
    if is_numeric and numbers.nunique() > 1:
        scaled = numbers.astype(float)
        log = scaled.min() > 0 and scaled.max() / scaled.min() > 10
        if log:
            scaled = np.log10(scaled)
        low, high = scaled.min(), scaled.max()
        positions = ((scaled - low) / (high - low)).to_numpy()
        if numbers.nunique() <= 5:  # choices such as batch sizes: label each one
            shown = sorted(numbers.unique())
        else:
            shown = [10 ** (low + f * (high - low)) if log else low + f * (high - low)
                     for f in (0.0, 0.5, 1.0)]
        spot = (lambda v: (np.log10(v) - low) / (high - low)) if log else \
            (lambda v: (v - low) / (high - low))
        return positions, [(spot(v), f"{v:.3g}") for v in shown]
    categories = _sorted_categories(values)
    spacing = max(1, len(categories) - 1)
    index = {c: i / spacing if len(categories) > 1 else 0.5 for i, c in enumerate(categories)}
    return values.astype(str).map(index).to_numpy(), [(p, c) for c, p in index.items()]


def _sorted_categories(values: pd.Series) -> list[str]:
    """Numbers in numeric order; anything else (layer strings) in sorted order."""
    unique = sorted(values.astype(str).unique().tolist())
    numbers = pd.to_numeric(pd.Series(unique), errors="coerce")
    if numbers.notna().all():
        return [u for _, u in sorted(zip(numbers, unique))]
    return unique


def parallel_coordinates(trials: pd.DataFrame, columns: Sequence[str]) -> Figure:
    """One line per finished trial through its searched settings to its validation
    accuracy: complete trials coloured by accuracy, pruned ones light grey."""
    finished = trials[trials["state"].isin(FINISHED_NAMES)].reset_index(drop=True)
    axes_columns = [*columns, "value"]
    names = [*columns, "validation\naccuracy"]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * len(axes_columns)), 5.2),
                           layout="constrained")
    complete = (finished["state"] == COMPLETE).to_numpy()
    floor = _accuracy_floor(finished["value"], finished.loc[complete, "value"])
    shown = finished.assign(value=finished["value"].clip(lower=floor))
    positions, ticks = {}, {}
    for column in axes_columns:
        positions[column], ticks[column] = _axis_positions(shown[column])
    x = np.arange(len(axes_columns))
    values = finished["value"].to_numpy(dtype=float)
    norm = plt.Normalize(values[complete].min() if complete.any() else 0, values.max())
    for i in np.argsort(np.where(complete, values, -np.inf)):  # best drawn last, on top
        y = [positions[c][i] for c in axes_columns]
        if complete[i]:
            ax.plot(x, y, color=plt.cm.viridis(norm(values[i])), lw=1.8, zorder=3)
        else:
            ax.plot(x, y, color=PRUNED_COLOUR, lw=0.7, alpha=0.5, linestyle="--")
    for xi, column in zip(x, axes_columns):
        ax.axvline(xi, color="black", lw=0.8)
        for position, label in ticks[column]:
            ax.text(xi + 0.04, position, label, fontsize=7, va="center")
    ax.set_xticks(x, names)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_columns) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
    fig.colorbar(mappable, ax=ax, label="validation accuracy of complete trials")
    ax.set_title(f"Settings of {len(finished)} trials: complete in colour, pruned dashed grey "
                 f"(accuracy where stopped, clipped at {floor:.3f})", fontsize=10)
    return fig


def param_importance(importance: pd.DataFrame) -> Figure:
    """fANOVA importance per searched setting, largest on top, labelled for what it is:
    which settings explained the search's validation accuracy at an early epoch (the last
    one every finished trial reached), not which knobs matter for a final model; the
    ablation figure answers that."""
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * max(3, len(importance)) + 1.4),
                           layout="constrained")
    if importance.empty:
        ax.text(0.5, 0.5, "too few finished trials to estimate importances", ha="center",
                va="center")
        ax.axis("off")
        return fig
    ordered = importance.sort_values("importance")
    bars = ax.barh(ordered["setting"], ordered["importance"], color="#4c72b0")
    ax.bar_label(bars, fmt="{:.2f}", padding=2, fontsize=8)
    ax.set_xlim(0, max(1e-9, ordered["importance"].max()) * 1.18)
    first = importance.iloc[0]
    ax.set_xlabel(f"share of the variance in validation accuracy at epoch {int(first['epoch'])} "
                  f"it explains (fANOVA)")
    ax.set_title(f"What explained the search's validation accuracy at epoch "
                 f"{int(first['epoch'])} (all {int(first['trials'])} finished trials reached it)"
                 f"\nearly-training importance, not the final models': see "
                 f"ablation_effects.png for each knob's effect", fontsize=10)
    return fig


# --- the ablation and the time-accuracy trade-off ----------------------------------------
# summary is the ablate stage's summary.csv (pipeline/ablation/effects.py).


def ablation_effects(summary: pd.DataFrame) -> Figure:
    """Each variant's test-accuracy difference to the baseline, in points, with its 95%
    interval over seeds; an interval crossing zero is not distinguishable (grey)."""
    variants = summary[summary["variant"] != "baseline"].iloc[::-1]
    fig, ax = plt.subplots(figsize=(8.4, 0.5 * max(3, len(variants)) + 1.6),
                           layout="constrained")
    y = np.arange(len(variants))
    diff = 100 * variants["test_accuracy_diff"].to_numpy(float)
    low = 100 * variants["test_accuracy_diff_low"].to_numpy(float)
    high = 100 * variants["test_accuracy_diff_high"].to_numpy(float)
    clear = (low > 0) | (high < 0)
    for yi, d, lo, hi, c in zip(y, diff, low, high, clear):
        colour = ("#1a7f37" if d > 0 else WRONG) if c else PRUNED_COLOUR
        ax.errorbar(d, yi, xerr=[[d - lo], [hi - d]], fmt="o", color=colour, capsize=4,
                    gid="effect")
        ax.annotate(f"{d:+.2f}", (d, yi), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, variants["change"])
    seeds = int(summary["seeds"].iloc[0]) if len(summary) else 0
    base = 100 * float(summary.loc[summary["variant"] == "baseline", "test_accuracy_mean"]
                       .iloc[0]) if (summary["variant"] == "baseline").any() else float("nan")
    ax.set_xlabel(f"test accuracy minus the baseline's ({base:.2f}%), points; "
                  f"95% interval over {seeds} seeds")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Ablation: one knob of the baseline changed at a time\n(grey: the interval "
                 "holds 0, not distinguishable from the baseline)", fontsize=10)
    return fig


def time_vs_accuracy(points: pd.DataFrame) -> Figure:
    """Training seconds against validation accuracy of every complete trial and ablation
    variant (effects.time_accuracy_points), the Pareto front joined by a line."""
    fig, ax = plt.subplots(figsize=(8.4, 5.2), layout="constrained")
    for kind, marker, colour in (("tuning trial", "o", "#4c72b0"),
                                 ("ablation variant", "s", "#dd8452")):
        shown = points[points["kind"] == kind]
        ax.scatter(shown["seconds"], shown["val_accuracy"], marker=marker, color=colour,
                   edgecolor="black", linewidth=0.4, label=f"{kind} ({len(shown)})", zorder=3)
    front = points[points["pareto"]].sort_values("seconds")
    ax.plot(front["seconds"], front["val_accuracy"], "-", color=WRONG, lw=1.4, zorder=2,
            label=f"Pareto front ({len(front)}): nothing is both faster and more accurate")
    for row in front.itertuples(index=False):
        ax.annotate(row.label, (row.seconds, row.val_accuracy), textcoords="offset points",
                    xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("training time, seconds (log scale; ablation variants: mean over seeds)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Training time against accuracy: the search's complete trials and the "
                 "ablation's variants", fontsize=10)
    return fig
