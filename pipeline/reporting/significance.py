"""Is the tuned model better than the baseline beyond chance, and where?

Both models saw the same test images, so they are compared image by image (paired):
only the images where exactly one model is right carry evidence. The exact McNemar test
asks whether those split evenly; the paired bootstrap gives an interval for the accuracy
difference; the per-class change says which classes the tuned model fixed or broke.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.core.errors import DataError

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
BOOTSTRAP_BATCH = 500  # resamples drawn at once: bounds the memory on 10,000 images
PREDICTION_COLUMNS = ("index", "actual", "predicted", "correct")


def mcnemar_exact(baseline_correct: Sequence[bool], tuned_correct: Sequence[bool]) -> dict:
    """The discordant counts and the exact two-sided McNemar p-value: a binomial test of
    'tuned only right' among the discordant images against one half. With no discordant
    image the models never disagree on correctness: no evidence of a difference, p = 1."""
    baseline, tuned = np.asarray(baseline_correct, bool), np.asarray(tuned_correct, bool)
    baseline_only = int(np.sum(baseline & ~tuned))
    tuned_only = int(np.sum(tuned & ~baseline))
    discordant = baseline_only + tuned_only
    p_value = 1.0 if discordant == 0 else float(
        stats.binomtest(tuned_only, discordant, 0.5, alternative="two-sided").pvalue)
    return {"baseline_only_right": baseline_only, "tuned_only_right": tuned_only,
            "mcnemar_p_value": p_value}


def bootstrap_interval(baseline_correct: Sequence[bool], tuned_correct: Sequence[bool],
                       seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Paired bootstrap interval (percentile) of tuned-minus-baseline accuracy: test images
    are resampled with replacement, each keeping both models' answers. No discordant image:
    every resample's difference is 0, and so is the interval."""
    baseline = np.asarray(baseline_correct, dtype=float)
    tuned = np.asarray(tuned_correct, dtype=float)
    if np.array_equal(baseline, tuned):
        return 0.0, 0.0
    result = stats.bootstrap(
        (baseline, tuned), lambda b, t, axis=-1: t.mean(axis=axis) - b.mean(axis=axis),
        paired=True, vectorized=True, n_resamples=resamples, batch=BOOTSTRAP_BATCH,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(baseline: pd.DataFrame, tuned: pd.DataFrame, seed: int = BOOTSTRAP_SEED) -> dict:
    """metrics.json's `significance`: both models' predictions tables of the same images."""
    b, t = baseline["correct"].to_numpy(bool), tuned["correct"].to_numpy(bool)
    low, high = bootstrap_interval(b, t, seed)
    return {"test_images": len(b), **mcnemar_exact(b, t),
            "accuracy_gain": float(t.mean() - b.mean()), "accuracy_gain_low": low,
            "accuracy_gain_high": high, "confidence": CONFIDENCE,
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "bootstrap_seed": seed}


def class_change(baseline: pd.DataFrame, tuned: pd.DataFrame,
                 class_names: Sequence[str]) -> pd.DataFrame:
    """Per true class: images, each model's recall, the change, and the images the tuned
    model fixed (baseline wrong, tuned right) and broke (the reverse)."""
    b, t = baseline["correct"].to_numpy(bool), tuned["correct"].to_numpy(bool)
    actual = baseline["actual"].to_numpy()
    rows = []
    for name in class_names:
        mine = actual == name
        images = int(mine.sum())
        before, after = (float(c[mine].mean()) if images else 0.0 for c in (b, t))
        rows.append({"class": name, "images": images, "baseline_recall": before,
                     "tuned_recall": after, "change": after - before,
                     "fixed": int(np.sum(mine & ~b & t)), "broken": int(np.sum(mine & b & ~t))})
    return pd.DataFrame(rows).assign(net=lambda f: f["fixed"] - f["broken"])


def read_predictions(path) -> pd.DataFrame:
    """evaluate's predictions.csv, checked: the columns compared and a boolean `correct`."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable predictions table ({exc})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} column; rerun the evaluate stage")
    return table.assign(correct=table["correct"].astype(bool))


def check_same_images(baseline: pd.DataFrame, tuned: pd.DataFrame, where: str) -> None:
    if len(baseline) != len(tuned) or not (
            baseline["index"].to_numpy() == tuned["index"].to_numpy()).all() or not (
            baseline["actual"].to_numpy() == tuned["actual"].to_numpy()).all():
        raise DataError(f"{where}: the two models' predictions are not of the same images; "
                        "rerun the evaluate stage")
