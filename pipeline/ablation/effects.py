"""The ablation's tables and statistics: ablate writes them, visualize and report read them.

runs.csv     one row per (variant, seed): what that run measured (RUN_COLUMNS)
summary.csv  one row per variant, the baseline first: each measure's mean and standard
             deviation over seeds, and the variant-minus-baseline difference paired by
             seed with its 95% t-interval over seeds (so seeds x3 narrows it by about
             sqrt(3), not by luck)

Pure pandas and SciPy: nothing here trains, so the readers never load TensorFlow.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

BASELINE = "baseline"
CONFIDENCE = 0.95
CONVERGED_WITHIN = 0.005  # validation accuracy this close to the run's best = converged

# What each run measured, in runs.csv's order after variant, change, overrides, seed
MEASURES = ("val_accuracy", "test_accuracy", "train_val_gap", "seconds_per_epoch", "seconds",
            "converged_epoch")
RUN_COLUMNS = ("variant", "change", "overrides", "seed", "epochs_run", *MEASURES)

LABELS = {"dropout": "dropout", "batch_norm": "batch norm", "l2": "L2", "hidden_units":
          "hidden layers", "learning_rate": "learning rate", "batch_size": "batch size",
          "lr_schedule": "learning-rate schedule", "early_stopping_patience":
          "early-stopping patience"}


# --- naming a variant -------------------------------------------------------------------


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "-".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def variant_name(overrides: Mapping[str, Any]) -> str:
    """`dropout=0 batch_norm=false`: the overrides as written, the baseline for none."""
    return " ".join(f"{key}={shown(value)}" for key, value in overrides.items()) or BASELINE


def change_phrase(overrides: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """What the variant does to the baseline, in words: 'removing dropout', 'learning rate
    0.001 -> 0.003'. `baseline` holds the baseline's model and train settings."""
    parts = []
    for key, value in overrides.items():
        label, before = LABELS.get(key, key.replace("_", " ")), baseline.get(key)
        if value in (0, False) and before not in (0, False, None) and key != "epochs":
            parts.append(f"removing {label}")
        elif value is True and before is False:
            parts.append(f"adding {label}")
        else:
            parts.append(f"{label} {shown(before)} -> {shown(value)}")
    return " and ".join(parts) or "the baseline"


# --- per run ------------------------------------------------------------------------------


def converged_epoch(val_accuracy: Sequence[float], within: float = CONVERGED_WITHIN) -> int:
    """The first epoch (from 1) whose validation accuracy came within `within` of the run's
    best: how fast a configuration gets there, which batch norm is said to improve."""
    curve = np.asarray(val_accuracy, dtype=float)
    return int(np.flatnonzero(curve >= curve.max() - within)[0]) + 1


def run_row(variant: str, change: str, overrides: Mapping[str, Any], seed: int,
            history: Mapping[str, Sequence[float]], val_accuracy: float, test_accuracy: float,
            epoch_seconds: Sequence[float], seconds: float) -> dict:
    """One runs.csv row. The gap is the last epoch's train accuracy (Keras's average over
    the epoch, dropout active) minus its validation accuracy."""
    return {
        "variant": variant, "change": change, "overrides": json.dumps(dict(overrides)),
        "seed": seed, "epochs_run": len(history["val_accuracy"]),
        "val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
        "train_val_gap": history["accuracy"][-1] - history["val_accuracy"][-1],
        "seconds_per_epoch": float(np.mean(epoch_seconds)), "seconds": seconds,
        "converged_epoch": converged_epoch(history["val_accuracy"]),
    }


# --- over seeds ---------------------------------------------------------------------------


def mean_interval(values: Sequence[float],
                  confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean; one value (or no spread) gives a point."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.all(values == values[0]):
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * stats.sem(values)
    return mean, float(mean - half), float(mean + half)


def summarize(runs: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per variant (runs' order, the baseline first): mean and std of each measure,
    and the difference to the baseline paired by seed, with its interval."""
    base = runs[runs["variant"] == BASELINE].set_index("seed")
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        group = group.set_index("seed")
        missing = sorted(set(group.index) ^ set(base.index))
        if missing:
            raise ValueError(f"{variant}: seeds {missing} are not in both it and the baseline")
        row = {"variant": variant, "change": group["change"].iloc[0],
               "overrides": group["overrides"].iloc[0], "seeds": len(group)}
        for measure in MEASURES:
            row[f"{measure}_mean"] = float(group[measure].mean())
            row[f"{measure}_std"] = float(group[measure].std(ddof=1)) if len(group) > 1 else 0.0
        for measure in MEASURES:
            diff = group[measure] - base.loc[group.index, measure]
            (row[f"{measure}_diff"], row[f"{measure}_diff_low"],
             row[f"{measure}_diff_high"]) = mean_interval(diff.to_numpy(), confidence)
        rows.append(row)
    summary = pd.DataFrame(rows)
    order = [BASELINE] + [v for v in summary["variant"] if v != BASELINE]
    return summary.set_index("variant").loc[order].reset_index()


def spans_zero(low: float, high: float) -> bool:
    """An interval that holds zero: the variant is not distinguishable from the baseline."""
    return low <= 0.0 <= high


def metrics_document(summary: pd.DataFrame) -> dict:
    """For `dvc metrics show`: each variant's mean test accuracy and its difference, under
    `ablation` so that `dvc exp show` keeps them apart from evaluate's baseline.*."""
    document = {}
    for row in summary.itertuples(index=False):
        document[row.variant] = {
            "test_accuracy": row.test_accuracy_mean, "val_accuracy": row.val_accuracy_mean,
            "seconds_per_epoch": row.seconds_per_epoch_mean}
        if row.variant != BASELINE:
            document[row.variant].update({
                "test_accuracy_diff": row.test_accuracy_diff,
                "test_accuracy_diff_low": row.test_accuracy_diff_low,
                "test_accuracy_diff_high": row.test_accuracy_diff_high})
    return {"ablation": document}


# --- time against accuracy ------------------------------------------------------------------


def pareto_front(seconds: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Which points no other point beats on both: as fast or faster and at least as
    accurate, better on one. A boolean mask in the input's order."""
    seconds, accuracy = np.asarray(seconds, float), np.asarray(accuracy, float)
    front = np.ones(len(seconds), dtype=bool)
    for i in range(len(seconds)):
        beaten = (seconds <= seconds[i]) & (accuracy >= accuracy[i]) & (
            (seconds < seconds[i]) | (accuracy > accuracy[i]))
        front[i] = not beaten.any()
    return front


def time_accuracy_points(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Every complete tuning trial and every ablation variant as (label, kind, seconds of
    training, validation accuracy), with the Pareto front over all of them marked."""
    complete = trials[trials["state"] == "COMPLETE"]
    points = pd.concat([
        pd.DataFrame({"label": [f"trial {int(n)}" for n in complete["number"]],
                      "kind": "tuning trial", "seconds": complete["seconds"].astype(float),
                      "val_accuracy": complete["value"].astype(float)}),
        pd.DataFrame({"label": summary["variant"], "kind": "ablation variant",
                      "seconds": summary["seconds_mean"].astype(float),
                      "val_accuracy": summary["val_accuracy_mean"].astype(float)}),
    ], ignore_index=True)
    return points.assign(pareto=pareto_front(points["seconds"], points["val_accuracy"]))
