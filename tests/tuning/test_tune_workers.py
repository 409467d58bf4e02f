"""The tune stage and `--worker` processes filling one study on a real PostgreSQL server.

Each process runs in its own project folder with a copy of the same prepared data, as
on separate machines after `dvc pull`; they share only the database and the artifacts
folder. Small generated data, a 3-epoch budget and 6 trials keep this to a minute or so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import tune
from pipeline.core import paths
from pipeline.tuning import storage as tune_storage
from pipeline.tuning import study
from tests.stages.test_tune import make_project
from tests.support import ROOT

N_TRIALS = 6
TRIAL_LINE = re.compile(r"^tune trial (\d+) \[", re.MULTILINE)

# A worker whose first trial hangs in training until the test kills it.
HANG_IN_FIRST_FIT = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from pipeline import tune\n"
    "from pipeline.training import fitting\n"
    "def fit(*args, **kwargs):\n"
    "    Path(sys.argv[1]).touch()\n"
    "    time.sleep(600)\n"
    "fitting.fit = fit\n"
    "tune.cli(['--worker'])\n")


@pytest.fixture
def shared(tmp_path, splits, postgres_url):
    """Project folders (one per process) and the environment naming the shared study."""
    # No refit: the stage copies the best trial's model out of the shared folder.
    driver = make_project(tmp_path / "driver", splits, n_trials=N_TRIALS, startup_trials=2,
                          refit=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT), FMNIST_TUNE_THREADS="1",
               **{tune_storage.STORAGE_ENV: postgres_url,
                  tune_storage.ARTIFACTS_ENV: str(tmp_path / "artifacts")})

    def machine(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(driver, folder)  # byte-identical data: the same study name
        return folder

    return driver, machine, env


class Process:
    def __init__(self, folder: Path, env: dict, *args: str):
        self.log = folder / "process.log"
        with open(self.log, "w") as out:
            self.popen = subprocess.Popen([sys.executable, *args], cwd=folder, env=env,
                                          stdout=out, stderr=subprocess.STDOUT)

    def finish(self, timeout: float = 400) -> str:
        self.popen.wait(timeout=timeout)
        output = self.log.read_text()
        assert self.popen.returncode == 0, output
        return output


def stage(folder: Path, env: dict) -> Process:
    return Process(folder, env, "-m", "pipeline.tune")


def worker(folder: Path, env: dict) -> Process:
    return Process(folder, env, "-m", "pipeline.tune", "--worker")


def the_study(env: dict):
    import optuna

    storage = tune_storage.open_database(env[tune_storage.STORAGE_ENV])
    [name] = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def optuna_artifacts(shared_study, number: int):
    from optuna.artifacts import get_all_artifact_meta

    return get_all_artifact_meta(shared_study.trials[number], storage=shared_study._storage)


def restart_once_trials_run(cluster, env: dict, running: list[Process], count: int) -> None:
    """`pg_ctl restart` as soon as `count` trials are under way, the processes still up."""
    import optuna

    storage = tune_storage.open_database(env[tune_storage.STORAGE_ENV])
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline and all(p.popen.poll() is None for p in running)
        names = optuna.get_all_study_names(storage)
        if names and len(optuna.load_study(study_name=names[0], storage=storage).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))) >= count:
            break
        time.sleep(0.2)
    cluster.restart()
    assert all(p.popen.poll() is None for p in running)  # mid-study


def test_stage_and_two_workers_fill_one_study_exactly_through_a_restart(shared,
                                                                         postgres_cluster):
    """Side by side, and the server restarted while two trials run: every process rides
    it out (no error, no traceback), each trial is run once, the study holds n_trials."""
    driver, machine, env = shared
    workers = [worker(machine(f"worker{i}"), env) for i in (1, 2)]
    stage_run = stage(driver, env)
    restart_once_trials_run(postgres_cluster, env, [stage_run, *workers], count=2)
    outputs = [stage_run.finish(), *(w.finish() for w in workers)]
    for output in outputs:
        assert "Traceback" not in output and "error" not in output, output

    shared_study = the_study(env)
    trials = shared_study.trials
    assert [t.number for t in trials] == list(range(N_TRIALS))
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    ran = [[int(n) for n in TRIAL_LINE.findall(output)] for output in outputs]
    assert sorted(sum(ran, [])) == list(range(N_TRIALS))  # each trial run by one process
    assert sum(bool(numbers) for numbers in ran) >= 2, outputs  # side by side

    # The outputs, once, by the stage alone; workers write nothing into their projects.
    assert outputs[0].count("wrote models/tuned.keras") == 1
    best = json.loads((driver / paths.BEST_PARAMS).read_text())
    assert best["trial"] == study.best_complete(shared_study).number
    assert len((driver / paths.TRIALS).read_text().splitlines()) == N_TRIALS + 1
    [meta] = optuna_artifacts(shared_study, best["trial"])
    stored = Path(env[tune_storage.ARTIFACTS_ENV]) / meta.artifact_id
    assert stored.read_bytes() == (driver / tune.MODEL_PATH).read_bytes()
    for name in ("worker1", "worker2"):
        assert not (driver.parent / name / "reports").exists()
        assert not (driver.parent / name / "models").exists()


def test_a_killed_workers_trial_is_retried_and_the_study_completes(shared, tmp_path):
    driver, machine, env = shared
    marker = tmp_path / "hanging"
    doomed = Process(machine("doomed"), env, "-c", HANG_IN_FIRST_FIT, str(marker))
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline and doomed.popen.poll() is None, \
            doomed.log.read_text()
        time.sleep(0.2)
    survivors = [worker(machine("worker"), env), stage(driver, env)]
    time.sleep(2)
    doomed.popen.send_signal(signal.SIGKILL)
    doomed.popen.wait()

    outputs = [s.finish() for s in survivors]
    shared_study = the_study(env)
    states = [t.state.name for t in shared_study.trials]
    assert states.count("FAIL") == 1
    assert sum(state in ("COMPLETE", "PRUNED") for state in states) == N_TRIALS
    assert set(states) <= {"COMPLETE", "PRUNED", "FAIL"}
    [failed] = [t for t in shared_study.trials if t.state.name == "FAIL"]
    [retry] = [t for t in shared_study.trials
               if t.user_attrs.get(study.RETRY_OF) == failed.number]
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.params == failed.params
    assert any(f"tune trial {retry.number} [" in output for output in outputs)
    best = json.loads((driver / paths.BEST_PARAMS).read_text())
    assert best["trial"] == study.best_complete(shared_study).number


@pytest.mark.parametrize("storage, message", [
    (None, "tune worker: error: --worker joins a study shared through a database: set "
           f"{tune_storage.STORAGE_ENV}="),
    ("postgresql://tuner:secret@127.0.0.1:{port}/studies",
     "tune worker: error: cannot reach the tune database at 127.0.0.1:{port}/studies"),
])
def test_a_worker_without_a_reachable_database_stops_with_one_line(tmp_path, splits, storage,
                                                                   message):
    from tests.support.postgres import free_port

    folder = make_project(tmp_path / "project", splits)
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMNIST_TUNE_")}
    if storage:
        env[tune_storage.STORAGE_ENV] = storage.format(port=port)
        env[tune_storage.ARTIFACTS_ENV] = str(tmp_path / "artifacts")
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "pipeline.tune", "--worker"], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(message.format(port=port)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "secret" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["data", "dvc.yaml", "params.yaml"]


@pytest.mark.parametrize("variable, value, problem", [
    ("FMNIST_TUNE_THREADS", "abc", "FMNIST_TUNE_THREADS=abc: must be a whole number of "
                                   "threads >= 1"),
    ("FMNIST_TUNE_THREADS", "0", "FMNIST_TUNE_THREADS=0: must be a whole number of threads >= 1"),
    ("FMNIST_TUNE_ARTIFACTS", "{file}/models", "FMNIST_TUNE_ARTIFACTS={file}/models: "
                                               "Not a directory"),
])
def test_a_bad_environment_variable_is_named_before_the_database_is_tried(tmp_path, splits,
                                                                          variable, value,
                                                                          problem):
    """The issue's case: FMNIST_TUNE_THREADS=abc with an unreachable database gave the
    database's error. A listening socket stands in for the database and counts the tries."""
    import socket

    assert tune.THREADS_ENV == "FMNIST_TUNE_THREADS"
    assert tune_storage.ARTIFACTS_ENV == "FMNIST_TUNE_ARTIFACTS"
    folder = make_project(tmp_path / "project", splits)
    file = tmp_path / "a-file"
    file.write_text("not a folder\n")
    with socket.create_server(("127.0.0.1", 0)) as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FMNIST_TUNE_")}
        env.update({"PYTHONPATH": str(ROOT), tune_storage.ARTIFACTS_ENV: str(tmp_path / "art"),
                    tune_storage.STORAGE_ENV: "postgresql://tuner:secret@127.0.0.1:"
                                              f"{database.getsockname()[1]}/studies",
                    variable: value.format(file=file)})
        result = subprocess.run([sys.executable, "-m", "pipeline.tune"], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=60)
        database.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection waits to be accepted
            database.accept()
    assert result.returncode == 1
    assert result.stderr == f"tune: error: {problem.format(file=file)}\n"
    assert sorted(p.name for p in folder.iterdir()) == ["data", "dvc.yaml", "params.yaml"]
