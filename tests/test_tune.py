"""The tune stage: search logic with a cheap fake trial, then the stage on small data."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import params, search, tune
from pipeline.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]

TINY_SPACE = {
    "hidden_units": [[16], [32]],
    "dropout": [0.0, 0.2],
    "batch_norm": [False],
    "learning_rate": [0.01],
    "lr_schedule": ["constant"],
    "batch_size": [64],
    "epochs": [2],
    "early_stopping_patience": [0],
}


def tune_section(**changes) -> dict:
    section = {"method": "grid", "max_trials": 3, "halving_factor": 3,
               "min_resource_fraction": 0.11, "seed": 0, "space": TINY_SPACE}
    return {**section, **changes}


def stage_params(**changes) -> params.StageParams:
    """The tune stage's view of the repo's params.yaml, its tune section replaced."""
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["tune"] = tune_section(**changes)
    return params.StageParams("tune", values, params.declared_params("tune", ROOT / "dvc.yaml"))


def tune_params(**changes) -> params.TuneParams:
    return params.TuneParams.from_params(stage_params(**changes))


def fake_trial(score_of):
    """A trial that scores instantly and records what it was asked to run."""
    calls = []

    def run(candidate, samples):
        calls.append((candidate, samples))
        return search.Outcome(score_of(candidate), 1 - score_of(candidate), epochs=2,
                              seconds=1.0, artifact=("model", candidate, samples))

    return run, calls


def by_learning_rate(candidate):
    return candidate["learning_rate"]


# --- candidates ----------------------------------------------------------------------


def test_grid_runs_every_combination_exactly_once():
    settings = tune_params(space={"learning_rate": [0.1, 0.2, 0.3], "dropout": [0.0, 0.5]})
    run, calls = fake_trial(by_learning_rate)
    candidates = search.candidates(settings)
    search.run_search(candidates, search.plan_rounds(settings, len(candidates), 400), run)
    seen = [(c["learning_rate"], c["dropout"]) for c, _ in calls]
    assert sorted(seen) == sorted(product([0.1, 0.2, 0.3], [0.0, 0.5]))
    assert {samples for _, samples in calls} == {400}


def test_random_is_seeded_and_respects_max_trials():
    space = {"learning_rate": [0.001, 0.002, 0.003, 0.004], "dropout": [0.0, 0.1, 0.2, 0.3]}
    first = search.candidates(tune_params(method="random", max_trials=5, seed=1, space=space))
    again = search.candidates(tune_params(method="random", max_trials=5, seed=1, space=space))
    other = search.candidates(tune_params(method="random", max_trials=5, seed=2, space=space))
    assert first == again
    assert first != other
    assert len(first) == 5
    assert len({tuple(c.items()) for c in first}) == 5  # sampled without repeats
    assert all(c["learning_rate"] in space["learning_rate"] for c in first)


def test_random_never_exceeds_the_grid():
    space = {"learning_rate": [0.001, 0.002]}
    assert len(search.candidates(tune_params(method="random", max_trials=10, space=space))) == 2


# --- successive halving ----------------------------------------------------------------


def test_halving_schedule_goes_from_a_fraction_to_the_full_split():
    rounds = search.halving_rounds(9, 54000, factor=3, min_fraction=0.11)
    assert [r.samples for r in rounds] == [6000, 18000, 54000]
    assert [r.candidates for r in rounds] == [9, 3, 1]
    # Fewer candidates need fewer rounds; the last one still uses the full split.
    assert [(r.samples, r.candidates) for r in search.halving_rounds(4, 900, 3, 0.11)] == \
        [(300, 4), (900, 2)]


def test_halving_promotes_the_top_candidates_with_more_samples():
    space = {"learning_rate": [0.01 * i for i in range(1, 10)]}
    settings = tune_params(method="halving", space=space)
    candidates = search.candidates(settings)
    run, calls = fake_trial(by_learning_rate)
    result = search.run_search(candidates, search.plan_rounds(settings, 9, 900), run)
    by_round = {}
    for trial in result.trials:
        by_round.setdefault(trial.round, []).append(trial)
    assert [len(by_round[r]) for r in sorted(by_round)] == [9, 3, 1]
    assert [by_round[r][0].samples for r in sorted(by_round)] == [100, 300, 900]
    promoted = {t.params["learning_rate"] for t in by_round[1]}
    assert promoted == set(sorted(space["learning_rate"])[-3:])
    assert result.best.params["learning_rate"] == max(space["learning_rate"])
    assert result.best_artifact == ("model", result.best.params, 900)


def test_best_is_chosen_among_full_split_trials():
    trials = [search.Trial(1, 0, 100, {"a": 1}, search.Outcome(0.99, 0.1)),
              search.Trial(2, 1, 300, {"a": 2}, search.Outcome(0.80, 0.5)),
              search.Trial(3, 1, 300, {"a": 3}, search.Outcome(0.85, 0.4))]
    assert search.best_trial(trials).number == 3


def test_time_left_scales_with_the_remaining_work():
    rounds = search.halving_rounds(3, 300, factor=3, min_fraction=0.3)  # 3 x 100, then 1 x 300
    done = [search.Trial(1, 0, 100, {}, search.Outcome(0.5, 1.0, epochs=2, seconds=4.0))]
    # 2 more trials on 100 samples and 1 on 300: 5 times the work done, at 4 s per unit.
    assert search.seconds_left(done, rounds, mean_epochs=2) == pytest.approx(20.0)


# --- refusing bad params ---------------------------------------------------------------


@pytest.mark.parametrize("space, key", [
    ({}, "tune.space"),
    (None, "tune.space"),
    ({"dropout": []}, "tune.space.dropout"),
    ({"learnig_rate": [0.1]}, "tune.space.learnig_rate"),
    ({"learning_rate": [0.01, -1.0]}, "tune.space.learning_rate[1]"),
    ({"hidden_units": [[]]}, "tune.space.hidden_units[0]"),
    ({"dropout": [0.1, 0.1]}, "tune.space.dropout"),
])
def test_empty_or_invalid_space_is_refused_naming_the_key(space, key):
    with pytest.raises(ParamsError, match="^" + re.escape(key) + ":"):
        tune_params(space=space)


def test_space_missing_an_undeclared_key_is_refused_naming_it():
    space = {k: v for k, v in TINY_SPACE.items() if k != "batch_size"}
    stage = stage_params(space=space)
    candidate = search.candidates(params.TuneParams.from_params(stage))[0]
    with pytest.raises(ParamsError, match="^train.batch_size: .*does not declare"):
        tune.trial_settings(stage, candidate)


def test_halving_needs_a_round_on_less_data():
    with pytest.raises(ParamsError, match="^tune.min_resource_fraction:"):
        tune_params(method="halving", min_resource_fraction=0.5, halving_factor=3)


# --- the stage on small data ------------------------------------------------------------


def make_project(folder: Path, splits, **tune_changes) -> Path:
    """A project folder with the repo's dvc.yaml, a tiny tune section and train/val only:
    no test.npz, so a stage that read it would fail."""
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["tune"] = tune_section(**tune_changes)
    (folder / "params.yaml").write_text(yaml.safe_dump(values))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    prepared = folder / "data" / "prepared"
    prepared.mkdir(parents=True)
    for name in ("train", "val"):
        x, y = splits[name]
        np.savez(prepared / f"{name}.npz", x=x, y=y)
    return folder


def read_trials(folder: Path) -> list[dict]:
    with open(folder / tune.TRIALS_PATH) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, splits):
    """One tune run with a 4-combination grid, shared by the checks below."""
    folder = make_project(tmp_path_factory.mktemp("grid"), splits)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        tune.main()
    return folder


def test_stage_writes_one_row_per_trial(grid_run):
    rows = read_trials(grid_run)
    assert len(rows) == 4
    assert {(r["param_hidden_units"], r["param_dropout"]) for r in rows} == \
        {("[16]", "0.0"), ("[16]", "0.2"), ("[32]", "0.0"), ("[32]", "0.2")}
    assert all(r["samples"] == "400" and r["epochs"] == "2" for r in rows)


def test_best_params_match_the_best_row_of_trials_csv(grid_run):
    rows = read_trials(grid_run)
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    best = json.loads((grid_run / tune.BEST_PARAMS_PATH).read_text())
    assert math.isclose(best["val_accuracy"], float(best_row["val_accuracy"]), abs_tol=1e-6)
    assert best["params"]["hidden_units"] == json.loads(best_row["param_hidden_units"])
    assert best["params"]["dropout"] == float(best_row["param_dropout"])
    assert best["model"]["hidden_units"] == best["params"]["hidden_units"]
    metrics = json.loads((grid_run / tune.METRICS_PATH).read_text())
    assert metrics["trials"] == 4 and metrics["best_val_accuracy"] == best["val_accuracy"]


def test_tuned_model_is_the_best_configuration_on_the_full_split(grid_run, splits):
    import keras

    best = json.loads((grid_run / tune.BEST_PARAMS_PATH).read_text())
    model = keras.models.load_model(grid_run / tune.MODEL_PATH)
    _, accuracy = model.evaluate(*splits["val"], verbose=0)
    assert math.isclose(accuracy, best["val_accuracy"], abs_tol=1e-6)
    assert [layer.units for layer in model.layers[:-1] if hasattr(layer, "units")] == \
        best["model"]["hidden_units"]
    assert (grid_run / tune.LIVE_DIR / "metrics.json").is_file()


def test_reusing_the_trial_model_equals_retraining(grid_run, splits, monkeypatch):
    """The stage keeps the winning trial's model instead of retraining: that is only
    right if a fresh run of the same configuration gives the same numbers."""
    from pipeline.fitting import fit

    monkeypatch.chdir(grid_run)
    stage = params.load("tune")
    best = json.loads((grid_run / tune.BEST_PARAMS_PATH).read_text())
    candidate = {k: tuple(v) if isinstance(v, list) else v for k, v in best["params"].items()}
    result = fit(*tune.trial_settings(stage, candidate), splits["train"], splits["val"],
                 verbose=False)
    assert result.val_accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert result.val_loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_stage_halving_records_growing_budgets(tmp_path, splits, monkeypatch):
    space = {**TINY_SPACE, "hidden_units": [[8], [16], [32]], "dropout": [0.0]}
    folder = make_project(tmp_path, splits, method="halving", min_resource_fraction=0.3,
                          space=space)
    monkeypatch.chdir(folder)
    tune.main()
    rows = read_trials(folder)
    assert [(r["round"], r["samples"]) for r in rows] == \
        [("0", "134"), ("0", "134"), ("0", "134"), ("1", "400")]
    round0_best = max(rows[:3], key=lambda r: (float(r["val_accuracy"]), -float(r["val_loss"])))
    assert rows[3]["param_hidden_units"] == round0_best["param_hidden_units"]
    best = json.loads((folder / tune.BEST_PARAMS_PATH).read_text())
    assert best["trial"] == 4


def test_bad_space_stops_before_any_training(tmp_path, splits, monkeypatch):
    folder = make_project(tmp_path, splits, space={**TINY_SPACE, "dropout": [0.2, 1.5]})
    monkeypatch.chdir(folder)
    monkeypatch.setattr("pipeline.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ParamsError, match=r"^tune.space.dropout\[1\]:"):
        tune.main()
    assert not (folder / "reports").exists()


def test_interrupted_run_leaves_no_result(tmp_path, splits, monkeypatch):
    from pipeline import fitting

    folder = make_project(tmp_path, splits)
    monkeypatch.chdir(folder)
    real_fit, calls = fitting.fit, []

    def fit_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fitting, "fit", fit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tune.main()
    assert len(read_trials(folder)) == 1  # progress so far
    for path in (tune.BEST_PARAMS_PATH, tune.METRICS_PATH, tune.MODEL_PATH, tune.LIVE_DIR):
        assert not (folder / path).exists(), path
