"""A worker process on a shared study with a toy objective, for the storage tests.

    python -m tests.support.toy_worker URL STUDY N_TRIALS
        [--hang-marker FILE] [--ready DIR --peers K]

--hang-marker: the first trial writes its number to FILE and then hangs (to be killed).
--ready/--peers: start trials only once K workers have written a file into DIR, so the
workers really run side by side.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HEARTBEAT_SECONDS, GRACE_SECONDS = 1, 3


def objective(hang_marker: Path | None):
    import optuna

    def run(trial):
        x = trial.suggest_float("x", -10.0, 10.0)
        trial.set_user_attr("pid", os.getpid())
        if hang_marker is not None:
            hang_marker.write_text(str(trial.number))
            time.sleep(600)
        time.sleep(0.2)
        trial.report((x - 2.0) ** 2, step=0)
        if x > 6.0:
            raise optuna.TrialPruned()
        return (x - 2.0) ** 2

    return run


def main() -> None:
    import optuna

    from pipeline.tuning import storage as tune_storage
    from pipeline.tuning import study

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("--hang-marker", type=Path)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--peers", type=int, default=1)
    args = parser.parse_args()

    study.quiet_optuna()
    storage = tune_storage.open_database(args.url, heartbeat_seconds=HEARTBEAT_SECONDS,
                                         grace_seconds=GRACE_SECONDS)
    shared = optuna.create_study(study_name=args.study, storage=storage, load_if_exists=True,
                                 sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
    if args.ready is not None:
        (args.ready / str(os.getpid())).touch()
        while len(list(args.ready.iterdir())) < args.peers:
            time.sleep(0.05)
    lock = tune_storage.StudyLock(storage, args.study)
    try:
        study.optimize_until_full(shared, objective(args.hang_marker), args.n_trials, lock,
                                  poll_seconds=0.5)
    finally:
        lock.close()


if __name__ == "__main__":
    main()
