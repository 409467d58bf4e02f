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

import pytest

from pipeline.core.errors import PipelineError
from pipeline.tuning import storage as tune_storage
from pipeline.tuning import study
from tests.support import ROOT
from tests.support.postgres import free_port


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


# --- a database that restarts, or goes away --------------------------------------------


def test_every_call_that_opens_a_transaction_rides_out_a_dropped_connection():
    """Optuna's RDB storage methods that open a session, each wrapped (a guard for
    Optuna upgrades that add one)."""
    import inspect

    import optuna

    opening = {name for name, function in vars(optuna.storages.RDBStorage).items()
               if callable(function) and "_create_scoped_session" in inspect.getsource(function)}
    wrapped = {name for name in opening
               if getattr(tune_storage.RidingOutStorage, name).__qualname__.startswith(
                   "_riding_out") or name == "record_heartbeat"}
    assert "get_trial" in opening and wrapped == opening


def test_the_toy_workers_ride_out_server_restarts(postgres_cluster, postgres_url, tmp_path):
    """Two processes side by side, the server restarted three times under them: both
    finish, with exactly n trials, each number once."""
    ready = tmp_path / "ready"
    ready.mkdir()
    n_trials = 60  # 0.2 s each: at least 6 s, the restarts end after about 3
    workers = [toy_worker(postgres_url, "toy", n_trials, "--ready", str(ready), "--peers", "2")
               for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(ready.iterdir())) < 2:  # both connected and about to claim trials
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.1)
    for _ in range(3):
        time.sleep(0.5)
        postgres_cluster.restart()
    assert all(w.poll() is None for w in workers)  # the restarts came mid-study
    outputs = [finish(worker) for worker in workers]

    assert outputs == ["", ""]  # not a warning, not a traceback
    trials = load_trials(postgres_url, "toy")
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}


def test_a_database_gone_for_good_is_one_line_and_a_rerun_completes(
        postgres_cluster, postgres_url, monkeypatch, capsys):
    """The server stops during a trial and stays down past RECONNECT_SECONDS: one error,
    no traceback from the heartbeat thread. Back up, a rerun fails the orphaned trial
    once its heartbeat is stale, reruns it and fills the study."""
    import optuna

    study.quiet_optuna()
    monkeypatch.setattr(tune_storage, "RECONNECT_SECONDS", 1)
    storage = tune_storage.open_database(postgres_url, heartbeat_seconds=1, grace_seconds=2)
    shared = optuna.create_study(study_name="gone", storage=storage)
    lock = tune_storage.StudyLock(storage, "gone")

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:
            postgres_cluster.stop_server()
            trial.report(x, step=0)
        return x

    try:
        with pytest.raises(tune_storage.DatabaseLost) as error:
            study.optimize_until_full(shared, objective, 3, lock)
        started = time.monotonic()
        with pytest.raises(tune_storage.DatabaseLost):
            lock.acquire()  # lost: at once, not another wait
        assert time.monotonic() - started < 0.5
        lock.close()
    finally:
        postgres_cluster.start_server()
    where = postgres_url.split("@", 1)[1]
    message = str(error.value)
    assert message.startswith(f"lost the tune database at {where} "
                              f"({tune_storage.STORAGE_ENV}) for 1 s: connection to server")
    assert message.endswith("Connection refused; the study keeps its finished trials: "
                            "rerun once the database is back")
    assert "\n" not in message
    assert "Traceback" not in capsys.readouterr().err  # the heartbeat thread kept quiet

    storage = tune_storage.open_database(postgres_url, heartbeat_seconds=1, grace_seconds=2)
    rerun = optuna.load_study(study_name="gone", storage=storage)
    lock = tune_storage.StudyLock(storage, "gone")
    try:
        study.optimize_until_full(rerun, objective, 3, lock, poll_seconds=0.2)
    finally:
        lock.close()
    trials = rerun.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "FAIL"]
    assert {t.state.name for t in trials[2:]} == {"COMPLETE"}
    [retry] = [t for t in trials if t.user_attrs.get(study.RETRY_OF) == 1]
    assert retry.params == trials[1].params
