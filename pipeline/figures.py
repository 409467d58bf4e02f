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

from pipeline import IMAGE_SHAPE  # noqa: E402

GAP = 2  # pixels between images in a row of samples
RIGHT, WRONG = "#1a7f37", "#cf222e"
CURVE_METRICS = ("accuracy", "loss")
SCORE_COLUMNS = ("val_accuracy", "val_loss", "seconds", "epochs_run")  # outcomes, not inputs
ID_COLUMNS = ("trial", "trial_id", "id", "index", "rank", "config", "config_id")
MAX_BUDGET_GROUPS = 6


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
    """Rows normalized by the true class: the diagonal is each class's recall."""
    counts = confusion.to_numpy(dtype=np.float64)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    names = list(confusion.columns)
    fig, ax = plt.subplots(figsize=(8.6, 7.4), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), share in np.ndenumerate(shares):
        if counts[row, col] > 0:
            ax.text(col, row, f"{share:.2f}" if share >= 0.005 else "<.01", ha="center",
                    va="center", fontsize=8,
                    color="white" if share > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    ax.set_yticks(range(len(confusion.index)), list(confusion.index))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class's test images")
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


def _plain_name(column: str) -> str:
    """'model.dropout' or 'param_dropout' -> 'dropout', to match searchable names."""
    name = column.rsplit(".", 1)[-1]
    return name[len("param_"):] if name.startswith("param_") else name


def hyperparameter_columns(trials: pd.DataFrame, searchable: Sequence[str]) -> list[str]:
    """Searched columns that vary; if none matches a known name, every varying column
    that is neither a score nor an id."""
    known = [c for c in trials.columns if _plain_name(c) in searchable]
    varying = [c for c in known if trials[c].astype(str).nunique() > 1]
    if known:
        return varying or known
    others = [c for c in trials.columns if c not in SCORE_COLUMNS and c.lower() not in ID_COLUMNS]
    return [c for c in others if trials[c].astype(str).nunique() > 1]


def budget_column(trials: pd.DataFrame, hyperparameters: Sequence[str],
                  searchable: Sequence[str]) -> str | None:
    """The first numeric column with 2 to MAX_BUDGET_GROUPS values that is no
    hyperparameter, score or id: the budget (halving round, training samples), used to
    colour the points."""
    for column in trials.columns:
        if (column in hyperparameters or column in SCORE_COLUMNS
                or _plain_name(column) in searchable or column.lower() in ID_COLUMNS):
            continue
        values = pd.to_numeric(trials[column], errors="coerce")
        if values.notna().all() and 1 < values.nunique() <= MAX_BUDGET_GROUPS:
            return column
    return None


def _sorted_categories(values: pd.Series) -> list[str]:
    """Numbers in numeric order; anything else (layer lists) in the order tried."""
    unique = values.astype(str).unique().tolist()
    numbers = pd.to_numeric(pd.Series(unique), errors="coerce")
    if numbers.notna().all():
        return [u for _, u in sorted(zip(numbers, unique))]
    return unique


def _spread(positions: np.ndarray) -> np.ndarray:
    """Deterministic side-by-side offsets so points of one category do not overlap."""
    offsets = np.zeros(len(positions))
    for position in np.unique(positions):
        members = np.flatnonzero(positions == position)
        if len(members) > 1:
            offsets[members] = np.linspace(-0.25, 0.25, len(members))
    return positions + offsets


def tuning_results(trials: pd.DataFrame, searchable: Sequence[str]) -> Figure:
    """Validation accuracy of every trial against each searched hyperparameter."""
    trials = trials.dropna(subset=["val_accuracy"]).reset_index(drop=True)
    hyperparameters = hyperparameter_columns(trials, searchable) or ["trial #"]
    if hyperparameters == ["trial #"]:
        trials = trials.assign(**{"trial #": np.arange(len(trials))})
    budget = budget_column(trials, hyperparameters, searchable)
    columns = min(3, len(hyperparameters))
    rows = -(-len(hyperparameters) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows + 0.5),
                             sharey=True, squeeze=False, layout="constrained")
    for ax in axes.flat[len(hyperparameters):]:
        ax.axis("off")
    best = int(trials["val_accuracy"].idxmax()) if len(trials) else None
    for ax, column in zip(axes.flat, hyperparameters):
        _tuning_panel(ax, trials, column, budget, best)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(6, len(handles)),
                   fontsize=8)
    fig.suptitle(f"Tuning: validation accuracy of {len(trials)} trials against the "
                 "searched hyperparameters")
    return fig


def _tuning_panel(ax, trials: pd.DataFrame, column: str, budget: str | None,
                  best: int | None) -> None:
    categories = _sorted_categories(trials[column])
    positions = trials[column].astype(str).map({c: i for i, c in enumerate(categories)})
    x = _spread(positions.to_numpy(dtype=float))
    y = trials["val_accuracy"].to_numpy()
    groups = sorted(trials[budget].unique()) if budget else [None]
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, len(groups)))
    for group, colour in zip(groups, colours):
        members = (trials[budget] == group).to_numpy() if budget else np.ones(len(y), bool)
        ax.scatter(x[members], y[members], color=colour, s=36, edgecolor="black",
                   linewidth=0.4, label=f"{budget} = {group}" if budget else "trial")
    if best is not None:
        ax.scatter(x[best], y[best], marker="o", s=220, facecolors="none", edgecolors=WRONG,
                   linewidth=2, zorder=3, label="highest validation accuracy")
    ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_xlabel(_plain_name(column))
    ax.set_title(f"by {_plain_name(column)}")
    ax.grid(axis="y", alpha=0.3)
