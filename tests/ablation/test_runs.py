"""The ablation trains every listed variant for every seed, and its summary is the
statistics of its own per-seed table."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline import ablate
from pipeline.core import paths
from pipeline.core.params import AblationParams, ModelParams, TrainParams
from tests.support.synthetic import write_prepared

MODEL = ModelParams(hidden_units=(16,), activation="relu", dropout=0.2, batch_norm=False,
                    l2=0.0)
TRAIN = TrainParams(optimizer="adam", learning_rate=0.001, lr_schedule="constant",
                    batch_size=16, epochs=99, early_stopping_patience=0, seed=99)
SETTINGS = AblationParams(variants=({"dropout": 0.0}, {"batch_norm": True, "batch_size": 8},
                                    {"epochs": 1}), seeds=(3, 5), epochs=3)


@pytest.fixture(scope="module")
def ablated(tmp_path_factory, splits):
    root = tmp_path_factory.mktemp("ablate")
    write_prepared(root / paths.PREPARED_DIR, splits)
    summary = ablate.ablate(SETTINGS, MODEL, TRAIN, root)
    return root, summary


def test_every_variant_is_trained_for_every_seed(ablated):
    root, _ = ablated
    runs = pd.read_csv(root / paths.ABLATION_RUNS)
    names = ["baseline", "dropout=0", "batch_norm=true batch_size=8", "epochs=1"]
    assert sorted(zip(runs["variant"], runs["seed"])) == sorted(
        (name, seed) for name in names for seed in SETTINGS.seeds)
    epochs = runs.set_index("variant")["epochs_run"]
    assert set(epochs.drop("epochs=1")) == {SETTINGS.epochs}  # ablation.epochs, not train's
    assert set(epochs.loc["epochs=1"]) == {1}
    assert runs["val_accuracy"].between(0.25, 1.0).all()  # each learned: chance is 0.1
    assert runs["test_accuracy"].between(0.25, 1.0).all()
    assert (runs["seconds_per_epoch"] > 0).all()
    assert runs["converged_epoch"].between(1, 3).all()
    assert list(runs["change"].drop_duplicates()) == [
        "the baseline", "removing dropout", "adding batch norm and batch size 16 -> 8",
        "epochs 3 -> 1"]


def test_the_seeds_change_the_runs(ablated):
    root, _ = ablated
    runs = pd.read_csv(root / paths.ABLATION_RUNS).set_index(["variant", "seed"])
    assert runs.loc[("baseline", 3), "val_accuracy"] != runs.loc[("baseline", 5), "val_accuracy"]


def test_the_summary_is_the_mean_and_interval_of_the_per_seed_table(ablated):
    root, returned = ablated
    runs = pd.read_csv(root / paths.ABLATION_RUNS)
    summary = pd.read_csv(root / paths.ABLATION_SUMMARY).set_index("variant")
    assert list(summary.index) == list(returned["variant"])
    base = runs[runs["variant"] == "baseline"].set_index("seed")
    for variant, group in runs.groupby("variant"):
        group = group.set_index("seed")
        row = summary.loc[variant]
        accuracy = group["test_accuracy"].to_numpy()
        assert row["test_accuracy_mean"] == pytest.approx(accuracy.mean())
        assert row["test_accuracy_std"] == pytest.approx(np.std(accuracy, ddof=1))
        diff = (group["test_accuracy"] - base.loc[group.index, "test_accuracy"]).to_numpy()
        n = len(diff)
        half = stats.t.ppf(0.975, n - 1) * np.std(diff, ddof=1) / np.sqrt(n)
        assert row["test_accuracy_diff"] == pytest.approx(diff.mean())
        if variant == "baseline":
            assert (row["test_accuracy_diff_low"], row["test_accuracy_diff_high"]) == (0, 0)
        else:
            assert row["test_accuracy_diff_low"] == pytest.approx(diff.mean() - half)
            assert row["test_accuracy_diff_high"] == pytest.approx(diff.mean() + half)
    metrics = json.loads((root / paths.ABLATION_METRICS).read_text())
    assert metrics["ablation"]["dropout=0"]["test_accuracy_diff"] == pytest.approx(
        summary.loc["dropout=0", "test_accuracy_diff"])


def test_the_runs_of_a_seed_are_reproducible(ablated, splits):
    from pipeline.ablation import runs as ablation

    root, _ = ablated
    runs = pd.read_csv(root / paths.ABLATION_RUNS)
    first = ablation.plan(SETTINGS, MODEL, TRAIN)[1]  # seed 3, dropout=0
    again = ablation.run_one(first, splits["train"], splits["val"], splits["test"])
    kept = runs[(runs["variant"] == first.variant) & (runs["seed"] == first.seed)].iloc[0]
    assert (again["val_accuracy"], again["test_accuracy"]) == pytest.approx(
        (kept["val_accuracy"], kept["test_accuracy"]))
