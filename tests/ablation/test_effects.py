"""The ablation's statistics on handcrafted tables: means, paired intervals, convergence,
the Pareto front."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.ablation import effects


def runs_table(rows):
    """(variant, seed, test_accuracy) rows, other measures filled in."""
    table = pd.DataFrame(rows, columns=["variant", "seed", "test_accuracy"])
    for measure in effects.MEASURES:
        if measure not in table:
            table[measure] = 1.0
    return table.assign(change=table["variant"], overrides="{}", epochs_run=2)


def test_differences_are_paired_by_seed_with_a_t_interval():
    table = runs_table([("baseline", 0, 0.80), ("baseline", 1, 0.90), ("baseline", 2, 0.85),
                        ("v", 2, 0.865), ("v", 0, 0.82), ("v", 1, 0.925)])  # seeds out of order
    row = effects.summarize(table).set_index("variant").loc["v"]
    diffs = np.array([0.02, 0.025, 0.015])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert row["test_accuracy_diff"] == pytest.approx(0.02)
    assert (row["test_accuracy_diff_low"], row["test_accuracy_diff_high"]) == pytest.approx(
        (0.02 - half, 0.02 + half))
    assert row["test_accuracy_mean"] == pytest.approx(np.mean([0.865, 0.82, 0.925]))
    assert not effects.spans_zero(row["test_accuracy_diff_low"], row["test_accuracy_diff_high"])


def test_the_baseline_comes_first_and_a_missing_seed_is_refused():
    table = runs_table([("v", 0, 0.8), ("baseline", 0, 0.8), ("v", 1, 0.8), ("baseline", 1, 0.9)])
    assert list(effects.summarize(table)["variant"]) == ["baseline", "v"]
    with pytest.raises(ValueError, match=r"^v: seeds \[1\] are not in both"):
        effects.summarize(table.iloc[:3])


def test_converged_epoch_is_the_first_within_half_a_point_of_the_best():
    assert effects.converged_epoch([0.80, 0.886, 0.89, 0.885]) == 2
    assert effects.converged_epoch([0.9]) == 1


def test_the_pareto_front_keeps_what_nothing_beats_on_both():
    seconds = [10, 20, 20, 30, 5, 40]
    accuracy = [0.80, 0.85, 0.84, 0.85, 0.70, 0.90]
    assert effects.pareto_front(seconds, accuracy).tolist() == [True, True, False, False,
                                                                True, True]


def test_variant_names_and_changes_read_as_written():
    baseline = {"dropout": 0.2, "batch_norm": True, "learning_rate": 0.001, "epochs": 4}
    assert effects.variant_name({"dropout": 0.0, "batch_norm": False}) == \
        "dropout=0 batch_norm=false"
    assert effects.change_phrase({"dropout": 0.0, "batch_norm": False}, baseline) == \
        "removing dropout and removing batch norm"
    assert effects.change_phrase({"learning_rate": 0.003}, baseline) == \
        "learning rate 0.001 -> 0.003"
    assert effects.change_phrase({"epochs": 2}, baseline) == "epochs 4 -> 2"
