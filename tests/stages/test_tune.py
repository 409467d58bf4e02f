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
from optuna.trial import TrialState

from pipeline import tune
from pipeline.core import params, paths
from pipeline.core.errors import DataError, ParamsError
from pipeline.tuning import space as search
from pipeline.tuning import study
from tests.conftest import DELETE, fill_disk, new_project, set_params
from tests.support import ROOT
from tests.support.synthetic import write_prepared

TINY = {
    "n_trials": 4, "sampler": "tpe", "startup_trials": 2, "pruner": "asha", "min_complete": 0,
    "min_epochs": 1, "reduction_factor": 2, "seed": 0, "refit": True,
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
    ({"dropout": {"low": 0.0, "hihg": 0.5}},
     "tune.space.dropout.hihg: unknown key in a range (known: low, high, log)"),
    ({"dropout": {"low": 0.0}},
     "tune.space.dropout.high: missing; a range is {low: .., high: .., log: true|false}"),
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
    message = ("tune.space.l2: missing; the tune section lists every setting a trial needs "
               "(a range, a list of choices or one value)")
    with pytest.raises(ParamsError, match=f"^{re.escape(message)}$"):
        tune_params(space={"l2": DELETE})


@pytest.mark.parametrize("changes, key", [
    ({"sampler": "grid"}, "tune.space.dropout: the grid sampler needs a list"),
    ({"min_epochs": 3}, "tune.min_epochs: must be below the epochs of every trial"),
    ({"sampler": "bayes"}, "tune.sampler: must be one of tpe, random, grid"),
    ({"pruner": "hyperband"}, "tune.pruner: must be one of asha, median, none"),
    ({"n_trials": 0}, "tune.n_trials: must be >= 1"),
    ({"reduction_factor": 1}, "tune.reduction_factor: must be >= 2"),
    ({"min_complete": -1}, "tune.min_complete: must be >= 0"),
    ({"refit": "yes"}, "tune.refit: must be true or false"),
    ({"space": {"early_stopping_patience": [0, 2]}},
     "tune.refit: the refit trains on the validation split too, so nothing is left to stop "
     "early on; set tune.space.early_stopping_patience to 0 or tune.refit to false"),
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


def test_the_first_min_complete_trials_run_to_the_end_and_set_the_bar():
    """ASHA alone can leave a strong first trial the only complete one (the default
    space's search did); min_complete lets the first trials through, and ASHA still
    records their rungs, so the trials after them are pruned as before."""
    wide = {"learning_rate": {"low": 1e-4, "high": 0.1, "log": True}, "epochs": 9}

    def states(min_complete):
        settings = tune_params(n_trials=12, startup_trials=4, min_epochs=1,
                               reduction_factor=3, min_complete=min_complete, space=wide)
        return [t.state.name for t in study.finished_trials(run_study(settings))]

    assert states(0)[:4].count("COMPLETE") < 4  # without it, ASHA prunes among the first
    forced = states(4)
    assert forced[:4] == ["COMPLETE"] * 4 and "PRUNED" in forced[4:]


@pytest.mark.parametrize("pruner, min_complete, words", [
    ("asha", 0, "asha pruner (from epoch 1, keeps the top 1/2 at each rung);"),
    ("asha", 3, "asha pruner (from epoch 1, keeps the top 1/2 at each rung; the first 3 run "
                "to the end);"),
    ("median", 3, "median pruner (from epoch 1, after 2 complete trials; the first 3 run to "
                  "the end);"),
    ("none", 3, "tpe sampler, no pruning;"),
])
def test_the_start_line_says_how_trials_are_pruned(pruner, min_complete, words):
    settings = tune_params(pruner=pruner, min_complete=min_complete)
    line = tune.start_line(optuna.create_study(study_name="s"), settings, 4, [], "here")
    assert line.startswith("study s in here: 4 trials, tpe sampler, ") and words in line


def test_min_complete_cannot_exceed_the_trials():
    with pytest.raises(ParamsError, match=r"^tune.min_complete: must not exceed tune.n_trials "
                                          r"\(4\), got 5$"):
        tune_params(n_trials=4, min_complete=5)


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


def finished_journal(folder: Path) -> Path:
    """A finished 4-trial study's journal file, run with the instant objective."""
    settings = tune_params()
    study.quiet_optuna()
    opened = study.open_study(settings, study.embedded_storage(folder), "torn")
    study.run_trials(opened, settings, fake_objective(settings))
    return folder / study.JOURNAL_NAME


def test_a_journal_torn_in_its_last_record_is_cut_to_the_last_whole_one(tmp_path, capsys):
    """A crash while appending leaves half a line and Optuna's lock file; Optuna would
    append straight after the half line, and that record would be unreadable."""
    journal = finished_journal(tmp_path)
    whole = journal.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    torn = len(whole) - len(last) + len(last) // 2  # the last trial's completion, half
    journal.write_bytes(whole[:torn])
    os.symlink(journal, f"{journal}.lock")  # as JournalFileSymlinkLock takes it
    capsys.readouterr()

    reopened = study.open_study(tune_params(), study.embedded_storage(tmp_path), "torn")
    lines = whole.count(b"\n")
    assert capsys.readouterr().out == (
        f"tune: repaired {journal}: cut its last record, torn by a crash while it was "
        f"written ({len(last) // 2} bytes, line {lines}); removed the lock "
        f"file journal.log.lock a killed process left\n")
    assert journal.read_bytes() == whole[:-len(last)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [study.JOURNAL_NAME]
    assert [t.state.name for t in reopened.trials][-1] == "RUNNING"
    assert study.retry_interrupted(reopened, wanted=4) == [3]  # appended after a whole line
    again = study.open_study(tune_params(), study.embedded_storage(tmp_path), "torn")
    assert capsys.readouterr().out == ""  # nothing more to repair
    assert [t.state.name for t in again.trials][3:] == ["FAIL", "WAITING"]


def test_a_record_glued_to_a_torn_one_is_cut_too(tmp_path, capsys):
    """What a torn journal became before the repair: the next run's record appended
    after the half line, one unreadable line. Cutting it loses only that record."""
    journal = finished_journal(tmp_path)
    whole = journal.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    glued = b'{"op_code":6,"trial_id":3,"state":4}\n'
    journal.write_bytes(whole[:len(whole) - len(last) // 2] + glued)
    reopened = study.open_study(tune_params(), study.embedded_storage(tmp_path), "torn")
    assert "cut its last record" in capsys.readouterr().out
    assert journal.read_bytes() == whole[:-len(last)]
    assert [t.state.name for t in reopened.trials][-1] == "RUNNING"


def test_a_bad_record_before_good_ones_is_one_line_naming_the_file(tmp_path):
    journal = finished_journal(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2] + [b"garbage\n"] + lines[3:]))
    with pytest.raises(DataError) as error:
        study.embedded_storage(tmp_path)
    assert str(error.value) == (
        f"{journal}: line 3 is not a journal record and {len(lines) - 3} follow it, so the "
        f"study cannot be read; delete {tmp_path} to run the search afresh")


def test_alone_a_running_trial_nobody_runs_stops_the_loop_instead_of_a_wait():
    """Without a lock the process is the study's only one: waiting could never end."""
    settings = tune_params(n_trials=1)
    opened = study.open_study(settings, optuna.storages.InMemoryStorage(), "orphan")
    opened.ask()  # RUNNING, owned by no process
    with pytest.raises(DataError, match=r"^study orphan: trial\(s\) 0 RUNNING with no "
                                        "process to run them"):
        study.run_trials(opened, settings, fake_objective(settings))


class DroppedOnce:
    """A lock the server drops during the first claim, while another process claims the
    same last slot and finishes its trial."""

    def __init__(self, opened: optuna.Study):
        self.opened, self.dropped = opened, False

    def acquire(self) -> None: ...

    def release(self) -> bool:
        if self.dropped or not self.opened.get_trials(states=(TrialState.RUNNING,)):
            return True
        self.dropped = True
        self.opened.add_trial(optuna.trial.create_trial(value=0.5))  # the other's trial
        return False


def test_a_claim_made_while_the_lock_was_gone_is_given_up_if_the_slot_was_taken():
    settings = tune_params(n_trials=2, pruner="none")
    opened = study.open_study(settings, optuna.storages.InMemoryStorage(), "dropped")
    opened.add_trial(optuna.trial.create_trial(value=0.4))
    study.run_trials(opened, settings, fake_objective(settings), lock=DroppedOnce(opened))
    assert [t.state.name for t in opened.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert len(study.finished_trials(opened)) == 2  # not 3


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


def run_tune(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline.tune` (or `-c CODE`) in a fresh process, as `dvc repro` runs it:
    the engine and its threads set as in the stage, whatever this process loaded."""
    command = args or ("-m", "pipeline.tune")
    return subprocess.run([sys.executable, *command], cwd=folder,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory, splits):
    """One tune run (TPE, ASHA pruning, 4 trials) in its own process, shared by the checks
    below: the reference the other fresh-process runs must match byte for byte."""
    folder = make_project(tmp_path_factory.mktemp("tune"), splits)
    done = run_tune(folder)
    assert done.returncode == 0, done.stderr
    return folder


def test_two_fresh_processes_tune_the_same_trials_and_model_bytes(stage_run, tmp_path,
                                                                  splits):
    folder = make_project(tmp_path / "again", splits)
    done = run_tune(folder)
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(read_trials(folder).drop(columns=["seconds"]),
                                  read_trials(stage_run).drop(columns=["seconds"]))
    assert (folder / tune.MODEL_PATH).read_bytes() == (stage_run / tune.MODEL_PATH).read_bytes()


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


def test_tuned_model_is_the_best_trials_settings_refit_on_train_and_val(stage_run, splits):
    import keras

    from pipeline.core.params import ModelParams, TrainParams
    from pipeline.training import fitting

    best = json.loads((stage_run / paths.BEST_PARAMS).read_text())
    rows = [np.concatenate([splits["train"][i], splits["val"][i]]) for i in (0, 1)]
    assert best["refit_images"] == len(rows[0]) == 500
    model = keras.models.load_model(stage_run / tune.MODEL_PATH)
    assert [layer.units for layer in model.layers if hasattr(layer, "units")][:-1] == \
        best["model"]["hidden_units"]
    again = fitting.fit(ModelParams.build(best["model"]), TrainParams.build(best["train"]),
                        tuple(rows), None, verbose=False).model
    assert np.allclose(model.predict(splits["test"][0], verbose=0),
                       again.predict(splits["test"][0], verbose=0), atol=1e-4)
    # The curves are the winning trial's, validated on the split the search judged on.
    live = json.loads((stage_run / paths.LIVE_DIRS["tuned"] / "metrics.json").read_text())
    assert live["eval"]["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    artifacts = list((stage_run / study.STUDY_DIR / study.ARTIFACTS_NAME).iterdir())
    assert len(artifacts) == 1  # only the best trial's own model is kept
    assert artifacts[0].read_bytes() != (stage_run / tune.MODEL_PATH).read_bytes()


def test_without_refit_a_finished_study_is_not_run_again_and_gives_its_winner(
        stage_run, tmp_path, splits, monkeypatch, capsys):
    """Turning refit off keeps the study (it acts after the search): nothing trains, and
    the tuned model is the best trial's own, validated where the search scored it."""
    import keras

    folder = tmp_path / "no-refit"
    shutil.copytree(stage_run, folder)
    set_params(folder, {"tune": tune_section(refit=False)})
    journal = study.STUDY_DIR / study.JOURNAL_NAME
    before = {p: (folder / p).read_bytes() for p in (journal, paths.TRIALS)}
    monkeypatch.chdir(folder)
    monkeypatch.setattr("pipeline.training.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    tune.main()
    assert "4 finished already" in capsys.readouterr().out
    assert {p: (folder / p).read_bytes() for p in before} == before
    [artifact] = (folder / study.STUDY_DIR / study.ARTIFACTS_NAME).iterdir()
    assert artifact.read_bytes() == (folder / tune.MODEL_PATH).read_bytes()
    best = json.loads((folder / paths.BEST_PARAMS).read_text())
    assert best["refit_images"] is None
    _, accuracy = keras.models.load_model(folder / tune.MODEL_PATH).evaluate(
        *splits["val"], verbose=0)
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)


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
    killed = run_tune(folder, "-c", die_in_third_fit)
    assert killed.returncode == -9, killed.stderr
    [opened] = stored_studies(folder).values()
    assert len(study.finished_trials(opened)) == 2
    assert not (folder / paths.BEST_PARAMS).exists()  # no result yet
    started = [t.datetime_start for t in study.finished_trials(opened)]

    resumed = run_tune(folder)
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


def test_a_study_torn_in_its_last_record_resumes_and_finishes(stage_run, tmp_path,
                                                              monkeypatch, capsys):
    """The issue's crash: the journal's last line, the last trial's completion, cut in
    half. The rerun repairs it, reruns that trial and ends with n_trials, not a wait."""
    folder = tmp_path / "torn"
    shutil.copytree(stage_run, folder)
    journal = folder / study.STUDY_DIR / study.JOURNAL_NAME
    whole = journal.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    assert json.loads(last)["state"] in (1, 2)  # COMPLETE or PRUNED: trial 3's end
    journal.write_bytes(whole[:len(whole) - len(last) // 2])
    monkeypatch.chdir(folder)
    capsys.readouterr()
    tune.main()
    out = capsys.readouterr().out
    assert out.startswith(f"tune: repaired {study.STUDY_DIR / study.JOURNAL_NAME}: cut its "
                          "last record, torn by a crash while it was written (")
    assert "3 finished already, rerunning interrupted trial(s) 3" in out
    [opened] = stored_studies(folder).values()
    assert [t.state.name for t in opened.trials].count("FAIL") == 1
    assert len(study.finished_trials(opened)) == TINY["n_trials"]
    assert opened.trials[4].user_attrs[study.RETRY_OF] == 3
    assert opened.trials[4].params == opened.trials[3].params
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())
    assert len(read_trials(folder)) == TINY["n_trials"] + 1  # the FAIL trial is listed


def test_a_full_disk_while_writing_the_outputs_keeps_the_previous_ones(
        stage_run, small_disk, monkeypatch, capsys):
    """The disk fills after the model's copy, half-way through the outputs: one line,
    every previous output as it was (not the new model beside old tables), no temp
    file; with room again, the rerun writes them all. Without refit: nothing trains."""
    folder = small_disk / "project"
    shutil.copytree(stage_run, folder)
    set_params(folder, {"tune": tune_section(refit=False)})
    outputs = [p for p in sorted(folder.rglob("*")) if p.is_file()
               and study.STUDY_DIR not in p.relative_to(folder).parents
               and p.parts[len(folder.parts)] in ("models", "reports")]
    assert folder / tune.MODEL_PATH in outputs and len(outputs) > 6
    for path in outputs:
        path.write_text(f"previous {path.name}")  # distinguishable from what the run writes
    before = sorted(folder.rglob("*"))
    model_pages = -(-(stage_run / tune.MODEL_PATH).stat().st_size // 4096)
    filler = fill_disk(small_disk, leave=(model_pages + 1) * 4096)  # the model fits
    monkeypatch.chdir(folder)
    monkeypatch.setattr("pipeline.training.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    capsys.readouterr()

    with pytest.raises(SystemExit) as exited:
        tune.cli([])
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert re.fullmatch(r"tune: error: (\S+): cannot be written: No space left on device; "
                        r"the previous outputs are kept: free some space and rerun\n", error)
    assert error.split()[2] != f"{tune.MODEL_PATH}:"  # written, then held back
    assert all(path.read_text() == f"previous {path.name}" for path in outputs)
    assert sorted(folder.rglob("*")) == before  # no temp file, no folder left

    filler.unlink()
    tune.main()
    assert (folder / paths.TRIALS).read_bytes() == (stage_run / paths.TRIALS).read_bytes()
    [artifact] = (folder / study.STUDY_DIR / study.ARTIFACTS_NAME).iterdir()
    assert (folder / tune.MODEL_PATH).read_bytes() == artifact.read_bytes()
    assert json.loads((folder / paths.BEST_PARAMS).read_text()) == \
        {**json.loads((stage_run / paths.BEST_PARAMS).read_text()), "refit_images": None}


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
    """Without refit, the model the study kept is checked as it is copied out: a damaged
    one names itself and leaves the previous tuned.keras in place."""
    folder = tmp_path / "damaged"
    shutil.copytree(stage_run, folder)
    set_params(folder, {"tune": tune_section(refit=False)})
    [kept] = (folder / study.STUDY_DIR / study.ARTIFACTS_NAME).iterdir()
    kept.write_bytes(kept.read_bytes()[:5000])
    before = (folder / tune.MODEL_PATH).read_bytes()
    best = json.loads((folder / paths.BEST_PARAMS).read_text())["trial"]
    monkeypatch.chdir(folder)
    monkeypatch.setattr("pipeline.training.fitting.fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(DataError) as caught:
        tune.main()
    assert str(caught.value) == (
        f"{kept.relative_to(folder)} (the model of the best trial, {best}): truncated or not a "
        f".keras file (File is not a zip file); delete {study.STUDY_DIR} to run the search afresh")
    assert (folder / tune.MODEL_PATH).read_bytes() == before
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["tuned.keras"]
