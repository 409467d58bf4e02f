"""Tune throughput on one machine: two workers with one compute thread each against one
worker with 2 threads and one with the default (XLA's, a thread per core), filling a
shared study on PostgreSQL.

Each setup gets the same wall-clock budget on the real prepared data and the default
tune params (n_trials raised so the budget, not the study, ends the run), in a fresh
database of a private PostgreSQL server (Debian's `postgresql` package, as the tests
use). Counted at the end: finished trials (complete + pruned) and epochs trained,
including those of trials cut off by the budget; epochs per minute is the fairer rate,
since the sampler draws different trials in the two setups. Also printed: the size of
the best model's artifact and how long a complete trial took (about what the stage's
refit of the winner costs). Run from the repository root:

    python bench/tune_workers.py                 # 2 rounds x 2.5 minutes per setup
    python bench/tune_workers.py --minutes 5 --rounds 1 --data /path/to/prepared
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/support/postgres.py starts the private server

from pipeline.tune import THREADS_ENV  # noqa: E402  (Keras-free)

# workers, FMNIST_TUNE_THREADS (None: the training path's default, a thread per core)
SETUPS = {"1 worker, default threads": (1, None), "1 worker x 2 threads": (1, 2),
          "2 workers x 1 thread": (2, 1)}


def project(folder: Path, data: Path) -> Path:
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["tune"]["n_trials"] = 10_000
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(values))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    prepared = folder / "data" / "prepared"
    prepared.mkdir(parents=True)
    for name in ("train.npz", "val.npz"):
        shutil.copy(data / name, prepared / name)
    return folder


def run_setup(url: str, folder: Path, workers: int, threads: int, seconds: float) -> dict:
    import optuna

    from pipeline.tuning import storage as tune_storage

    env = dict(os.environ, PYTHONPATH=str(ROOT),
               **{tune_storage.STORAGE_ENV: url,
                  tune_storage.ARTIFACTS_ENV: str(folder / "artifacts")})
    env.pop(THREADS_ENV, None)
    if threads:
        env[THREADS_ENV] = str(threads)
    logs = [open(folder / f"worker{i}.log", "w") for i in range(workers)]
    processes = [subprocess.Popen([sys.executable, "-m", "pipeline.tune", "--worker"],
                                  cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
                 for log in logs]
    time.sleep(seconds)
    for process in processes:
        if process.poll() is not None:
            sys.exit(f"a worker stopped early:\n{(folder / 'worker0.log').read_text()}")
        process.send_signal(signal.SIGKILL)
        process.wait()
    for log in logs:
        log.close()

    storage = tune_storage.open_database(url)
    [name] = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    models = sorted((folder / "artifacts").rglob("*"), key=lambda p: p.stat().st_mtime)
    models = [p for p in models if p.is_file()]
    return {
        "finished": sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials),
        "complete": len(complete),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "complete_seconds": (sum(t.duration.total_seconds() for t in complete) / len(complete)
                             if complete else None),
        "model_bytes": models[-1].stat().st_size if models else None,
        "model_path": models[-1] if models else None,
    }


def upload_seconds(model: Path, folder: Path) -> float:
    """How long storing one model in a FileSystemArtifactStore takes (local disk)."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    folder.mkdir()
    store = FileSystemArtifactStore(str(folder))
    started = time.perf_counter()
    upload_artifact(artifact_store=store, file_path=str(model), study_or_trial=trial)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.5, help="budget of each run")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each setup, in alternating order (the machine's load "
                             "drifts; alternating spreads it over both setups)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared",
                        help="folder with the prepared train.npz and val.npz")
    args = parser.parse_args()
    from tests.support import postgres

    reason = postgres.missing_reason()
    if reason:
        sys.exit(f"bench/tune_workers.py: {reason}")
    cluster = postgres.PrivateCluster().start()
    runs: dict[str, list[dict]] = {label: [] for label in SETUPS}
    try:
        with tempfile.TemporaryDirectory(prefix="tune-workers-") as scratch:
            for round_ in range(args.rounds):
                order = list(SETUPS) if round_ % 2 == 0 else list(reversed(SETUPS))
                for label in order:
                    workers, threads = SETUPS[label]
                    folder = project(Path(scratch) / f"{round_}-{len(runs[label])}-{workers}"
                                     f"x{threads}", args.data)
                    r = run_setup(cluster.create_database(), folder, workers, threads,
                                  args.minutes * 60)
                    runs[label].append(r)
                    print(f"round {round_ + 1}, {label}, {args.minutes:g} min: {r['finished']} "
                          f"trials finished ({r['complete']} complete), {r['epochs']} epochs, "
                          f"load average {os.getloadavg()[0]:.1f}", flush=True)
            minutes = args.minutes * args.rounds
            rates = {}
            for label, results in runs.items():
                trials = sum(r["finished"] for r in results) / minutes
                epochs = sum(r["epochs"] for r in results) / minutes
                rates[label] = (trials, epochs)
                print(f"{label}: {trials:.2f} trials/min, {epochs:.1f} epochs/min")
            t2, e2 = rates["2 workers x 1 thread"]
            for label in ("1 worker, default threads", "1 worker x 2 threads"):
                t1, e1 = rates[label]
                print(f"ratio 2 workers x 1 thread / {label}: "
                      f"trials {t2 / t1 if t1 else float('nan'):.2f}, epochs {e2 / e1:.2f}")
            done = [r for results in runs.values() for r in results if r["model_path"]]
            if done:
                seconds = upload_seconds(done[0]["model_path"], Path(scratch) / "upload")
                took = [r["complete_seconds"] for r in done]
                print(f"best-model artifact: {done[0]['model_bytes'] / 1e6:.1f} MB, stored in "
                      f"{seconds:.2f} s; a complete trial (about the cost of refitting the "
                      f"best) took {sum(took) / len(took):.0f} s on average")
    finally:
        cluster.stop()
    print(f"cpu: {os.cpu_count()} cores, shared with other processes: their load slows "
          "both setups")


if __name__ == "__main__":
    main()
