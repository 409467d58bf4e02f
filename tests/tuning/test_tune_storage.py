"""Where the tune study lives, and several processes sharing it on a real PostgreSQL server.

The process tests use a toy objective (tests/support/toy_worker.py), so they prove the storage
mechanics (exact trial count, heartbeat, retry) in seconds, apart from any training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.tuning import study
from pipeline.tuning import storage as tune_storage
from pipeline.core.errors import PipelineError
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]


def toy_worker(url: str, study: str, n_trials: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.toy_worker", url, study,
                             str(n_trials), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def load_trials(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study,
                             storage=tune_storage.open_database(url)).get_trials()


def test_no_url_means_the_embedded_journal(tmp_path, monkeypatch):
    from optuna.storages import JournalStorage

    monkeypatch.delenv(tune_storage.STORAGE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    home = tune_storage.open_home()
    assert isinstance(home.storage, JournalStorage) and not home.shared
    assert (tmp_path / study.STUDY_DIR / study.JOURNAL_NAME).exists()


def test_the_url_and_artifacts_folder_come_from_the_environment(monkeypatch, postgres_url,
                                                                 tmp_path):
    import optuna

    monkeypatch.setenv(tune_storage.STORAGE_ENV, postgres_url)
    monkeypatch.delenv(tune_storage.ARTIFACTS_ENV, raising=False)
    with pytest.raises(PipelineError, match=f"so {tune_storage.ARTIFACTS_ENV} must be too"):
        tune_storage.open_home()
    monkeypatch.setenv(tune_storage.ARTIFACTS_ENV, str(tmp_path / "models"))
    home = tune_storage.open_home()
    assert isinstance(home.storage, optuna.storages.RDBStorage) and home.shared
    assert home.storage.heartbeat_interval == tune_storage.HEARTBEAT_SECONDS
    assert home.storage.grace_period == tune_storage.GRACE_SECONDS
    assert (tmp_path / "models").is_dir()
    assert home.where.startswith("PostgreSQL at 127.0.0.1:")


def test_an_unreachable_database_is_one_line_naming_the_host(monkeypatch, tmp_path):
    port = free_port()  # nothing listens there
    monkeypatch.setenv(tune_storage.STORAGE_ENV, f"postgresql://tuner:secret@127.0.0.1:{port}/s")
    monkeypatch.setenv(tune_storage.ARTIFACTS_ENV, str(tmp_path))
    with pytest.raises(PipelineError) as error:
        tune_storage.open_home()
    message = str(error.value)
    assert f"127.0.0.1:{port}/s" in message and "Connection refused" in message
    assert "\n" not in message and "secret" not in message


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///study.db", "must name a PostgreSQL database"),
    ("not a url", "is not a database URL"),
])
def test_only_postgresql_urls_are_accepted(url, expected):
    with pytest.raises(PipelineError, match=expected):
        tune_storage.open_database(url)


def test_a_dead_trial_is_rerun_at_most_max_retry_times():
    import optuna

    shared = optuna.create_study()
    rerun = tune_storage.RerunStaleTrial(max_retry=2)
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    for number in range(3):  # trial 0, its rerun 1, that one's rerun 2: all died
        shared.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, params={"x": 0.5}, distributions={"x": x},
            user_attrs={study.RETRY_OF: number - 1} if number else {},
            system_attrs={"completed_rung_0": 0.9}))
    trials = shared.trials
    rerun(shared, trials[1])
    [queued] = shared.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert queued.user_attrs[study.RETRY_OF] == 1 and queued.system_attrs == {
        "fixed_params": {"x": 0.5}}  # no rung records: the pruner judges the rerun afresh
    rerun(shared, trials[2])  # already the second rerun of trial 0
    assert len(shared.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


def test_two_processes_end_with_exactly_n_trials(postgres_url, tmp_path):
    ready = tmp_path / "ready"
    ready.mkdir()
    n_trials = 12
    workers = [toy_worker(postgres_url, "toy", n_trials, "--ready", str(ready), "--peers", "2")
               for _ in range(2)]
    for worker in workers:
        finish(worker)

    trials = load_trials(postgres_url, "toy")
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}


def test_a_killed_workers_trial_fails_by_heartbeat_and_is_retried(postgres_url, tmp_path):
    marker = tmp_path / "hung-trial"
    victim = toy_worker(postgres_url, "toy", 5, "--hang-marker", str(marker))
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and victim.poll() is None, victim.stdout.read()
        time.sleep(0.1)
    survivor = toy_worker(postgres_url, "toy", 5)
    time.sleep(1.0)  # the survivor is running its own trials when the victim dies
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    hung = int(marker.read_text())

    finish(survivor)
    trials = load_trials(postgres_url, "toy")
    by_state = {}
    for trial in trials:
        by_state.setdefault(trial.state.name, []).append(trial)
    assert [t.number for t in by_state["FAIL"]] == [hung]
    assert len(by_state.get("COMPLETE", [])) + len(by_state.get("PRUNED", [])) == 5
    assert "RUNNING" not in by_state and "WAITING" not in by_state
    retries = [t for t in trials if t.user_attrs.get(study.RETRY_OF) == hung]
    assert len(retries) == 1 and retries[0].state.name in ("COMPLETE", "PRUNED")
    assert retries[0].params == by_state["FAIL"][0].params
    assert retries[0].user_attrs["pid"] == survivor.pid
