"""McNemar and the paired bootstrap on a small handcrafted pair of prediction files: the
values equal ones computed here, the case of no discordant image included."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline import CLASS_NAMES
from pipeline.core.errors import DataError
from pipeline.reporting import significance


def predictions_file(path, actual, correct):
    """evaluate's predictions.csv layout; `predicted` is the actual class when correct."""
    names = np.asarray(CLASS_NAMES, dtype=object)
    actual = np.asarray(actual)
    predicted = np.where(correct, actual, (actual + 1) % len(CLASS_NAMES))
    pd.DataFrame({"index": np.arange(len(actual)), "actual": names[actual],
                  "predicted": names[predicted], "confidence": 0.9,
                  "correct": correct}).to_csv(path, index=False)
    return path


ACTUAL = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
# 20 images: both right on 11, both wrong on 2, only tuned right on 6, only baseline on 1
BASELINE = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]
TUNED = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]


@pytest.fixture
def pair(tmp_path):
    return (significance.read_predictions(predictions_file(
                tmp_path / "baseline.csv", ACTUAL, np.array(BASELINE, bool))),
            significance.read_predictions(predictions_file(
                tmp_path / "tuned.csv", ACTUAL, np.array(TUNED, bool))))


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images(pair):
    result = significance.compare(*pair)
    assert (result["baseline_only_right"], result["tuned_only_right"]) == (1, 6)
    # two-sided exact: P(X <= 1) + P(X >= 6) for X ~ Binomial(7, 1/2) = 2 * 8 / 128
    assert result["mcnemar_p_value"] == pytest.approx(16 / 128)
    assert result["mcnemar_p_value"] == pytest.approx(stats.binomtest(6, 7, 0.5).pvalue)
    assert result["accuracy_gain"] == pytest.approx((17 - 12) / 20)
    assert result["test_images"] == 20


def test_the_bootstrap_interval_is_the_seeded_percentile_interval_of_the_differences(pair):
    result = significance.compare(*pair, seed=4)
    differences = np.array(TUNED, float) - np.array(BASELINE, float)
    expected = stats.bootstrap((differences,), np.mean, n_resamples=9999, method="percentile",
                               rng=np.random.default_rng(4)).confidence_interval
    assert (result["accuracy_gain_low"], result["accuracy_gain_high"]) == pytest.approx(
        (expected.low, expected.high))
    assert result["accuracy_gain_low"] < result["accuracy_gain"] < result["accuracy_gain_high"]
    assert significance.compare(*pair, seed=4) == result  # seeded


def test_no_discordant_image_gives_p_one_and_a_zero_interval(tmp_path):
    correct = np.array(BASELINE, bool)
    same = [significance.read_predictions(predictions_file(tmp_path / f"{n}.csv", ACTUAL, correct))
            for n in ("baseline", "tuned")]
    result = significance.compare(*same)
    assert (result["baseline_only_right"], result["tuned_only_right"]) == (0, 0)
    assert result["mcnemar_p_value"] == 1.0
    assert (result["accuracy_gain"], result["accuracy_gain_low"],
            result["accuracy_gain_high"]) == (0.0, 0.0, 0.0)


def test_the_per_class_change_counts_what_was_fixed_and_broken(pair):
    change = significance.class_change(*pair, CLASS_NAMES).set_index("class")
    assert change["fixed"].sum() == 6 and change["broken"].sum() == 1
    assert change.loc["Shirt", ["fixed", "broken", "net"]].tolist() == [2, 0, 2]
    assert change.loc["Bag", ["fixed", "broken", "net"]].tolist() == [1, 0, 1]
    assert change.loc["Ankle boot", ["fixed", "broken", "net"]].tolist() == [0, 1, -1]
    assert change.loc["Sandal", "change"] == pytest.approx(0.5)  # 1/2 -> 2/2
    assert change["images"].tolist() == [2] * 10


def test_a_predictions_file_without_its_columns_is_refused(tmp_path):
    pd.DataFrame({"index": [0]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match=r"p.csv: no actual, predicted, correct column; "
                                        r"rerun the evaluate stage$"):
        significance.read_predictions(tmp_path / "p.csv")
