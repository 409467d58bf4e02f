"""Run trials until a study holds exactly n finished ones, however many processes share it.

Optuna's `MaxTrialsCallback` stops a worker only after its trial ends, so workers that
start together overshoot. Here a process counts the trials and claims the next one under
a lock (see tune_storage.StudyLock): a trial slot is taken by every trial that is not
FAIL, so the study never holds more than n. A trial whose worker died turns FAIL through
the storage's heartbeat; its retry (a WAITING copy, from RetryHeartbeatStaleTrialCallback)
takes over the slot and is run by whichever process looks next.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

FINISHED = ("COMPLETE", "PRUNED")
HOLDS_A_SLOT = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def count_states(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def fail_stale_trials(study) -> None:
    import optuna

    with warnings.catch_warnings():  # marked experimental, stable since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def optimize_until_full(study, objective: Callable, n_trials: int, lock,
                        poll_seconds: float = 2.0,
                        on_wait: Callable[[dict[str, int]], None] | None = None) -> None:
    """Run `objective` trial by trial until `n_trials` are COMPLETE or PRUNED.

    When every slot is taken by other processes' running trials, wait (`on_wait` is told
    the state counts once per wait) until they finish or one of them turns out dead.
    """

    def released(trial):
        lock.release()  # claimed: other processes may count and claim now
        return objective(trial)

    waited_for = None
    while True:
        lock.acquire()
        try:
            fail_stale_trials(study)
            counts = count_states(study)
            if sum(counts.get(state, 0) for state in FINISHED) >= n_trials:
                return
            taken = sum(counts.get(state, 0) for state in HOLDS_A_SLOT)
            if taken < n_trials or counts.get("WAITING", 0):
                # ask() inside takes a WAITING retry first, else samples a new trial.
                study.optimize(released, n_trials=1)
                waited_for = None
                continue
        finally:
            lock.release()
        if on_wait is not None and counts != waited_for:
            on_wait(counts)
        waited_for = counts
        time.sleep(poll_seconds)
