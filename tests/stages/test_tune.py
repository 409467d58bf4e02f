"""The tune stage: the Optuna search with instant objectives, then the stage itself on
small generated data (real Keras training, real journal storage, a real kill)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from pipeline import tune
from pipeline.core import params
from pipeline.tuning import space as search
from pipeline.core import paths
from pipeline.tuning import study
from pipeline.tuning import reports
from pipeline.core.errors import DataError, ParamsError
from tests.conftest import DELETE, new_project, set_params
from tests.support.synthetic import write_prepared

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "n_trials": 4, "sampler": "tpe", "startup_trials": 2, "pruner": "asha", "min_epochs": 1,
    "reduction_factor": 2, "seed": 0,
    "space": {
        "hidden_units": ["16", "32"], "activation": "relu",
        "dropout": {"low": 0.0, "high": 0.3}, "batch_norm": False, "l2": 0.0,
        "optimizer": "adam", "learning_rate": {"low": 0.003, "high": 0.03, "log": True},
        "lr_schedule": "constant", "batch_size": 64, "epochs": 3,
        "early_stopping_patience": 0,
    },
}



def tune_section(space=None, **changes) -> dict:
    """TINY with some keys changed, and some of its space (DELETE removes a key)."""
    section = copy.deepcopy(TINY)
    for name, value in (space or {}).items():
        if value is DELETE:
            del section["space"][name]
        else:
            section["space"][name] = value
    return {**section, **changes}


def tune_params(**changes) -> search.TuneParams:
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["tune"] = tune_section(**changes)
    stage = params.StageParams("tune", values, params.declared_params("tune", ROOT / "dvc.yaml"))
    return search.TuneParams.from_params(stage)


# --- params: the space ----------------------------------------------------------------


@pytest.mark.parametrize("space, key", [
    ({"dropout": {"low": 0.4, "high": 0.1}}, "tune.space.dropout: low (0.4) must not exceed"),
    ({"l2": {"low": 0.0, "high": 0.01, "log": True}}, "tune.space.l2.low: must be > 0 on a log"),
    ({"batch_size": []}, "tune.space.batch_size: an empty list of choices"),
    ({"learnig_rate": 0.01}, "tune.space.learnig_rate: unknown key, not a model or train "
                             "setting; did you mean tune.space.learning_rate?"),
    ({"dropout": {"low": 0.0, "hihg": 0.5}}, "tune.space.dropout.hihg: unknown key in a range"),
    ({"dropout": {"low": 0.0}}, "tune.space.dropout.high: missing"),
    ({"learning_rate": {"low": -0.1, "high": 0.1}}, "tune.space.learning_rate.low: must be > 0"),
    ({"dropout": [0.2, 1.5]}, r"tune.space.dropout[1]: must be < 1.0"),
    ({"batch_size": [64, 64]}, "tune.space.batch_size: lists a choice more than once"),
    ({"hidden_units": [[64, 32]]}, "tune.space.hidden_units[0]: a choice must be a number"),
    ({"hidden_units": ["64-x"]}, "tune.space.hidden_units[0]: must be layer widths"),
    ({"hidden_units": {"low": 16, "high": 64}}, "tune.space.hidden_units: a range needs a"),
    ({"batch_size": {"low": 16.5, "high": 64}}, "tune.space.batch_size.low: must be an integer"),
])
def test_an_invalid_space_is_refused_naming_the_key(space, key):
    with pytest.raises(ParamsError, match="^" + re.escape(key)):
        tune_params(space=space)


def test_the_space_must_give_every_setting_a_trial_needs():
    with pytest.raises(ParamsError, match=r"^tune.space.l2: missing; the tune section lists"):
        tune_params(space={"l2": DELETE})


@pytest.mark.parametrize("changes, key", [
    ({"sampler": "grid"}, "tune.space.dropout: the grid sampler needs a list"),
    ({"min_epochs": 3}, "tune.min_epochs: must be below the epochs of every trial"),
    ({"sampler": "bayes"}, "tune.sampler: must be one of tpe, random, grid"),
    ({"pruner": "hyperband"}, "tune.pruner: must be one of asha, median, none"),
    ({"n_trials": 0}, "tune.n_trials: must be >= 1"),
    ({"reduction_factor": 1}, "tune.reduction_factor: must be >= 2"),
])
def test_invalid_search_settings_are_refused_naming_the_key(changes, key):
    with pytest.raises(ParamsError, match="^" + re.escape(key)):
        tune_params(**changes)


def test_plain_forms_become_ranges_choices_and_fixed_values():
    space = tune_params(space={"batch_size": {"low": 32, "high": 256, "log": True}}).space
    assert space["batch_size"] == search.Range(32, 256, log=True, integer=True)
    assert space["dropout"] == search.Range(0.0, 0.3, log=False, integer=False)
    assert space["hidden_units"] == search.Choices(("16", "32"))
    assert space["epochs"] == search.Fixed(3)
    model_settings, train_settings = search.trial_settings(
        {**{n: e.value for n, e in space.items() if isinstance(e, search.Fixed)},
         "hidden_units": "512-256", "dropout": 0.1, "learning_rate": 0.01, "batch_size": 64},
        seed=5)
    assert model_settings.hidden_units == (512, 256)
    assert (train_settings.seed, train_settings.batch_size) == (5, 64)


# --- the search, with instant objectives --------------------------------------------------


def fake_objective(settings: search.TuneParams, best_rate: float = 0.01):
    """Validation accuracy that grows with the epochs and peaks at best_rate."""
    def objective(trial):
        values = study.suggest(trial, settings.space)
        quality = -abs(math.log10(values["learning_rate"] / best_rate))
        epochs = values["epochs"]
        for epoch in range(1, epochs + 1):
            accuracy = 0.9 + 0.05 * quality - 0.2 / epoch + 0.01 * values["dropout"]
            trial.report(accuracy, epoch)
            if epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy
    return objective


def run_study(settings: search.TuneParams, storage=None, name="test") -> optuna.Study:
    study.quiet_optuna()
    opened = study.open_study(settings, storage or optuna.storages.InMemoryStorage(), name)
    study.run_trials(opened, settings, fake_objective(settings))
    return opened


def sequence(opened: optuna.Study) -> list[tuple]:
    """What a search did: each finished trial's state, params and reported curve."""
    return [(t.state.name, sorted(t.params.items()), sorted(t.intermediate_values.items()))
            for t in study.finished_trials(opened)]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_each_sampler_is_seeded(sampler):
    wide = {"learning_rate": {"low": 1e-4, "high": 0.1, "log": True}, "epochs": 9}
    settings = tune_params(sampler=sampler, n_trials=12, startup_trials=4, space=wide)
    first, again = run_study(settings), run_study(settings)
    assert sequence(first) == sequence(again)
    assert len(sequence(first)) == 12
    other = run_study(tune_params(sampler=sampler, n_trials=12, startup_trials=4, space=wide,
                                  seed=1))
    assert sequence(other) != sequence(first)


def test_grid_runs_every_combination_once_and_no_more():
    grid = {"learning_rate": [0.001, 0.01, 0.1], "dropout": [0.0, 0.2], "hidden_units": ["16"]}
    settings = tune_params(sampler="grid", pruner="none", n_trials=50, space=grid)
    first = run_study(settings)
    runs = [(t.params["learning_rate"], t.params["dropout"]) for t in first.trials]
    assert sorted(runs) == sorted(product([0.001, 0.01, 0.1], [0.0, 0.2]))
    assert sequence(run_study(settings)) == sequence(first)  # seeded too


def test_asha_prunes_trials_that_fall_behind_at_a_rung():
    settings = tune_params(n_trials=16, startup_trials=4, min_epochs=1, reduction_factor=3,
                           space={"learning_rate": {"low": 1e-4, "high": 0.1, "log": True},
                                  "epochs": 9})
    opened = run_study(settings)
    states = [t.state.name for t in study.finished_trials(opened)]
    assert states[0] == "COMPLETE" and "PRUNED" in states and states.count("COMPLETE") >= 2
    for trial in study.finished_trials(opened):
        if trial.state.name == "PRUNED":  # stopped at a rung: epoch 1 or 3, never at 9
            assert max(trial.intermediate_values) in (1, 3)
        else:
            assert max(trial.intermediate_values) == 9


def test_median_pruner_waits_for_its_startup_trials_and_warm_up():
    settings = tune_params(pruner="median", n_trials=10, startup_trials=3, min_epochs=2,
                           space={"learning_rate": {"low": 1e-4, "high": 0.1, "log": True},
                                  "epochs": 6})
    trials = study.finished_trials(run_study(settings))
    assert [t.state.name for t in trials[:3]] == ["COMPLETE"] * 3
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(max(t.intermediate_values) >= 2 for t in pruned)


def test_a_resumed_study_ends_like_an_uninterrupted_one(tmp_path):
    """A run killed mid-trial leaves it RUNNING; the next run fails it, reruns its params
    and goes on: the finished trials are exactly those of an uninterrupted search,
    pruning decisions included (the failed trial's partial curve does not count)."""
    settings = tune_params(n_trials=10, startup_trials=3, reduction_factor=2,
                           space={"learning_rate": {"low": 1e-4, "high": 0.1, "log": True},
                                  "epochs": 6})
    storage = study.embedded_storage(tmp_path)
    opened = study.open_study(settings, storage, "resumed")
    study.run_trials(opened, dataclasses.replace(settings, n_trials=4), fake_objective(settings))
    opened.sampler = study.make_sampler(settings, 4)
    killed = opened.ask()  # a trial that reports two epochs, then its process dies
    study.suggest(killed, settings.space)
    killed.report(0.95, 1)
    killed.report(0.96, 2)

    reopened = study.open_study(settings, study.embedded_storage(tmp_path), "resumed")
    assert study.retry_interrupted(reopened, wanted=10) == [4]
    study.run_trials(reopened, settings, fake_objective(settings))
    assert len(study.finished_trials(reopened)) == 10
    assert [t.state.name for t in reopened.trials].count("FAIL") == 1
    assert reopened.trials[5].user_attrs[study.RETRY_OF] == 4
    assert reopened.trials[5].params == reopened.trials[4].params
    assert sequence(reopened) == sequence(run_study(settings))


def test_the_study_name_changes_with_a_setting_in_use_only():
    data, code = "d" * 64, "c" * 64
    base = study.study_name(tune_params(), data, code)
    assert base == study.study_name(tune_params(), data, code)
    assert base != study.study_name(tune_params(seed=1), data, code)
    assert base != study.study_name(tune_params(space={"batch_size": 32}), data, code)
    assert base != study.study_name(tune_params(), "e" * 64, code)
    assert base != study.study_name(tune_params(), data, "f" * 64)
    median = tune_params(pruner="median")
    assert study.study_name(median, data, code) == \
        study.study_name(tune_params(pruner="median", reduction_factor=5), data, code)


# --- the stage on small data --------------------------------------------------------------


def make_project(folder: Path, splits, **tune_changes) -> Path:
    """A project folder with the repo's dvc.yaml, a tiny tune section and train/val only:
    no test.npz, so a stage that read it would fail."""
    new_project(folder)
    set_params(folder, {"tune": tune_section(**tune_changes)})
    write_prepared(folder / paths.PREPARED_DIR, {name: splits[name] for name in ("train", "val")})
    return folder


def read_trials(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / paths.TRIALS)


def stored_studies(folder: Path) -> dict[str, optuna.Study]:
    storage = study.embedded_storage(folder / study.STUDY_DIR)
    return {name: optuna.load_study(study_name=name, storage=storage)
            for name in optuna.get_all_study_names(storage)}


# The grid's second trial has a learning rate 1000 times too small: the pruner must stop it.
BAD_RATE = {"learning_rate": [0.01, 0.00001], "dropout": [0.0], "hidden_units": ["32"]}


def run_python(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    """A fresh interpreter, as dvc starts a stage. Runs whose bytes are compared are all
    made this way: the thread count (which changes the weights' last bits on some CPUs)
    is then the same for each, whatever earlier tests did in this process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory, splits):
    """One tune run (TPE, ASHA pruning, 4 trials), shared by the checks below."""
    folder = make_project(tmp_path_factory.mktemp("tune"), splits)
    finished = run_python(["-m", "pipeline.tune"], folder)
    assert finished.returncode == 0, finished.stderr
    return folder


def test_the_study_holds_n_trials_finished_trials(stage_run):
    [opened] = stored_studies(stage_run).values()
    assert len(study.finished_trials(opened)) == TINY["n_trials"]
    trials = read_trials(stage_run)
    assert list(trials["number"]) == list(range(TINY["n_trials"]))
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert (trials["state"] == "COMPLETE").any()


def test_best_params_are_those_of_the_best_complete_trial(stage_run):
    trials = read_trials(stage_run)
    complete = trials[trials["state"] == "COMPLETE"]
    best_row = complete.loc[complete["value"].idxmax()]
    best = json.loads((stage_run / paths.BEST_PARAMS).read_text())
    assert best["trial"] == best_row["number"]
    assert best["val_accuracy"] == pytest.approx(best_row["value"], abs=1e-12)
    assert best["params"]["hidden_units"] == str(best_row["params_hidden_units"])
    assert best["params"]["learning_rate"] == pytest.approx(best_row["params_learning_rate"])
    assert best["model"]["hidden_units"] == [int(best["params"]["hidden_units"])]
    assert best["train"]["seed"] == TINY["seed"] and best["train"]["epochs"] == 3
    metrics = json.loads((stage_run / paths.TUNE_METRICS).read_text())
    assert metrics["best_val_accuracy"] == best["val_accuracy"]
    assert (metrics["trials"], metrics["complete"], metrics["pruned"]) == \
        (len(trials), len(complete), int((trials["state"] == "PRUNED").sum()))


def test_curves_stop_where_each_trial_was_pruned(stage_run):
    trials = read_trials(stage_run).set_index("number")
    curves = pd.read_csv(stage_run / paths.TUNE_CURVES)
    epochs = curves.groupby("number")["epoch"].max()
    assert (epochs == trials["epochs_run"]).all()
    assert (trials.loc[trials["state"] == "COMPLETE", "epochs_run"] == 3).all()
    last = curves.sort_values("epoch").groupby("number")["val_accuracy"].last()
    assert np.allclose(last, trials["last_val_accuracy"])
    importance = pd.read_csv(stage_run / paths.TUNE_IMPORTANCE)
    assert set(importance["setting"]) == {"hidden_units", "dropout", "learning_rate"}
    assert importance["importance"].sum() == pytest.approx(1.0)


def test_tuned_model_is_the_best_trials_own_weights(stage_run, splits):
    import keras

    best = json.loads((stage_run / paths.BEST_PARAMS).read_text())
    model = keras.models.load_model(stage_run / tune.MODEL_PATH)
    _, accuracy = model.evaluate(*splits["val"], verbose=0)
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert [layer.units for layer in model.layers if hasattr(layer, "units")][:-1] == \
        best["model"]["hidden_units"]
    live = json.loads((stage_run / paths.LIVE_DIRS["tuned"] / "metrics.json").read_text())
    assert live["eval"]["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    artifacts = list((stage_run / study.STUDY_DIR / study.ARTIFACTS_NAME).iterdir())
    assert len(artifacts) == 1  # only the best model is kept
    assert artifacts[0].read_bytes() == (stage_run / tune.MODEL_PATH).read_bytes()


def test_a_finished_study_is_not_run_again(stage_run, monkeypatch, capsys):
    journal = study.STUDY_DIR / study.JOURNAL_NAME
    before = {p: (stage_run / p).read_bytes() for p in (tune.MODEL_PATH, journal,
                                                        paths.TRIALS)}
    monkeypatch.chdir(stage_run)
    monkeypatch.setattr("pipeline.training.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    tune.main()
    assert "4 finished already" in capsys.readouterr().out
    assert {p: (stage_run / p).read_bytes() for p in before} == before


def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(stage_run, tmp_path, splits):
    """Kill -9 during the third trial, rerun: the finished trials are reused, the killed
    one is failed and rerun, and the outputs equal the uninterrupted run's, bytes too."""
    folder = make_project(tmp_path / "killed", splits)
    die_in_third_fit = (
        "import os, signal\n"
        "from pipeline import tune\n"
        "from pipeline.training import fitting\n"
        "real, calls = fitting.fit, []\n"
        "def fit(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*args, **kwargs)\n"
        "fitting.fit = fit\n"
        "tune.main()\n")
    killed = run_python(["-c", die_in_third_fit], folder)
    assert killed.returncode == -9, killed.stderr
    [opened] = stored_studies(folder).values()
    assert len(study.finished_trials(opened)) == 2
    assert not (folder / paths.BEST_PARAMS).exists()  # no result yet
    started = [t.datetime_start for t in study.finished_trials(opened)]

    resumed = run_python(["-m", "pipeline.tune"], folder)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 finished already, rerunning interrupted trial(s) 2" in resumed.stdout
    [opened] = stored_studies(folder).values()
    assert [t.datetime_start for t in study.finished_trials(opened)][:2] == started
    assert len(study.finished_trials(opened)) == TINY["n_trials"]
    assert [t.state.name for t in opened.trials].count("FAIL") == 1

    ours, reference = read_trials(folder), read_trials(stage_run)
    ours = ours[ours["state"] != "FAIL"].drop(columns=["number", "seconds"])
    pd.testing.assert_frame_equal(ours.reset_index(drop=True),
                                  reference.drop(columns=["number", "seconds"]))
    assert (folder / tune.MODEL_PATH).read_bytes() == (stage_run / tune.MODEL_PATH).read_bytes()


def test_a_changed_tune_key_starts_a_fresh_study(stage_run, tmp_path, monkeypatch):
    folder = tmp_path / "changed"
    shutil.copytree(stage_run, folder)
    set_params(folder, {"tune.seed": 3})
    monkeypatch.chdir(folder)
    tune.main()
    studies = stored_studies(folder)
    assert len(studies) == 2
    best = json.loads((folder / paths.BEST_PARAMS).read_text())
    assert best["study"] in studies and best["train"]["seed"] == 3
    assert all(len(study.finished_trials(s)) == TINY["n_trials"] for s in studies.values())


def test_a_deliberately_bad_learning_rate_is_pruned(tmp_path, splits, monkeypatch):
    # seed 1 orders this grid good rate first (the first trial always runs to the end)
    folder = make_project(tmp_path, splits, sampler="grid", n_trials=5, space=BAD_RATE, seed=1)
    monkeypatch.chdir(folder)
    tune.main()
    trials = read_trials(folder)
    assert list(trials["params_learning_rate"]) == [0.01, 0.00001]  # the grid, once each
    assert list(trials["state"]) == ["COMPLETE", "PRUNED"]
    assert list(trials["epochs_run"]) == [3, 1]


def test_bad_space_stops_before_any_training(tmp_path, splits, monkeypatch):
    folder = make_project(tmp_path, splits, space={"dropout": [0.2, 1.5]})
    monkeypatch.chdir(folder)
    monkeypatch.setattr("pipeline.training.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ParamsError, match=r"^tune.space.dropout\[1\]:"):
        tune.main()
    assert not (folder / "reports").exists()


def test_a_damaged_best_model_in_the_study_stops_with_one_line(stage_run, tmp_path,
                                                               monkeypatch):
    """The model the study kept is checked as it is copied out: a damaged one names itself
    and leaves the previous tuned.keras in place."""
    folder = tmp_path / "damaged"
    shutil.copytree(stage_run, folder)
    [kept] = (folder / study.STUDY_DIR / study.ARTIFACTS_NAME).iterdir()
    kept.write_bytes(kept.read_bytes()[:5000])
    before = (folder / tune.MODEL_PATH).read_bytes()
    best = json.loads((folder / reports.BEST_PARAMS_PATH).read_text())["trial"]
    monkeypatch.chdir(folder)
    monkeypatch.setattr("pipeline.training.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(DataError) as caught:
        tune.main()
    assert str(caught.value) == (
        f"{kept.relative_to(folder)} (the model of the best trial, {best}): truncated or not a "
        f".keras file (File is not a zip file); delete {study.STUDY_DIR} to run the search afresh")
    assert (folder / tune.MODEL_PATH).read_bytes() == before
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["tuned.keras"]
