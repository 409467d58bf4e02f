"""The Optuna side of tuning: where the study lives, its name, its sampler and pruner, and
the loop that fills it with trials. Free of TensorFlow, so tests drive it with instant
objectives.

One study per (tune settings, prepared data, trial code): its name hashes the three, so
rerunning an interrupted stage continues the same study and any change starts a fresh
one. With one worker it is deterministic: each trial's sampler is seeded from tune.seed
and the number of trials already finished, and Optuna's samplers and pruners keep their
state in the study, so a resumed study draws and prunes exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._file import LOCK_FILE_SUFFIX
from optuna.trial import FrozenTrial, TrialState

from pipeline.core.errors import DataError, PipelineError
from pipeline.core.paths import STUDY_DIR  # a persist output: DVC keeps it between runs
from pipeline.core.runner import log
from pipeline.tuning.space import Choices, Range, SpaceEntry, TuneParams

JOURNAL_NAME = "journal.log"
ARTIFACTS_NAME = "artifacts"
MODEL_ARTIFACT = "model.keras"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RETRY_OF = "retry_of"  # user attr of a trial that reruns a failed one: its number


def quiet_optuna() -> None:
    """The stage prints one line per trial; Optuna's own INFO lines would double them."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --- where the study lives and what it is called ------------------------------------------


def embedded_storage(folder: Path = STUDY_DIR) -> JournalStorage:
    """Optuna's journal file: an append-only log of every trial event, so a run killed at
    any point leaves a study that loads and continues (once repair_journal has cut a
    record the kill tore)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOURNAL_NAME
    repaired = repair_journal(path)
    if repaired:
        log(f"tune: repaired {path}: {repaired}")
    return JournalStorage(JournalFileBackend(str(path)))


def repair_journal(path: Path) -> str | None:
    """Make the journal end with its last whole record; say what was cut, or None.

    A process killed while appending leaves a torn last line and its lock file. Optuna
    skips a torn line when reading but appends straight after it, gluing the next record
    into one unreadable line: that record is lost for every reader (a trial marked failed
    stays RUNNING), so the tail is cut before anything appends. The embedded file has one
    process at a time (DVC's lock), so a lock file found here is a dead one's. A bad line
    with records after it is not a torn write: the study cannot be read."""
    repaired = []
    lock = Path(f"{path}{LOCK_FILE_SUFFIX}")
    if lock.is_symlink() or lock.exists():
        lock.unlink()
        repaired.append(f"removed the lock file {lock.name} a killed process left")
    if not path.exists():
        return "; ".join(repaired) or None
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    good = 0  # bytes of whole, readable records
    for number, line in enumerate(lines, start=1):
        if not _is_record(line):
            if number < len(lines):
                raise DataError(f"{path}: line {number} is not a journal record and "
                                f"{len(lines) - number} follow it, so the study cannot be "
                                f"read; delete {path.parent} to run the search afresh")
            with open(path, "r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())
            repaired.insert(0, f"cut its last record, torn by a crash while it was written "
                               f"({len(data) - good} bytes, line {number})")
            break
        good += len(line)
    return "; ".join(repaired) or None


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return False


def artifact_store(folder: Path = STUDY_DIR) -> FileSystemArtifactStore:
    """Where the best complete trial's model waits until the stage writes it out."""
    path = folder / ARTIFACTS_NAME
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def file_digest(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def settings_in_use(tune: TuneParams) -> dict[str, Any]:
    """The tune settings that shape the trials: reduction_factor means nothing to the
    median pruner, so changing it there keeps the study; refit acts after the search."""
    settings = asdict(tune)
    del settings["refit"]
    if tune.sampler != "tpe" and tune.pruner != "median":
        del settings["startup_trials"]
    if tune.pruner == "none":
        del settings["min_epochs"], settings["min_complete"]
    if tune.pruner != "asha":
        del settings["reduction_factor"]
    return settings


def study_name(tune: TuneParams, data_digest: str, code_digest: str) -> str:
    """The study of these settings, this prepared data and this trial code."""
    key = json.dumps({"tune": settings_in_use(tune), "data": data_digest, "code": code_digest},
                     sort_keys=True, default=str)
    return "tune-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def open_study(tune: TuneParams, storage: str | BaseStorage, name: str) -> optuna.Study:
    """Load the study to continue it, or create it. Loading first: create_study appends
    to the journal even when the study exists, which would change a finished study's file."""
    sampler, pruner = make_sampler(tune, finished=0), make_pruner(tune)
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                 pruner=pruner)
    except KeyError:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                   sampler=sampler, pruner=pruner, load_if_exists=True)


# --- sampling and pruning ---------------------------------------------------------------


def grid_space(space: dict[str, SpaceEntry]) -> dict[str, list]:
    return {name: list(entry.values) for name, entry in space.items()
            if isinstance(entry, Choices)}


def trials_wanted(tune: TuneParams) -> int:
    """tune.n_trials, or every combination once if the grid has fewer."""
    if tune.sampler != "grid":
        return tune.n_trials
    return min(tune.n_trials, int(np.prod([len(v) for v in grid_space(tune.space).values()])))


def make_sampler(tune: TuneParams, finished: int) -> optuna.samplers.BaseSampler:
    """The sampler for the next trial, seeded by tune.seed and the trials finished so far.
    The grid keeps tune.seed: its seed shuffles the grid, which must stay put."""
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(tune.space), seed=tune.seed)
    seed = int(np.random.SeedSequence([tune.seed, finished]).generate_state(1)[0])
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=tune.startup_trials, seed=seed)


def make_pruner(tune: TuneParams) -> optuna.pruners.BasePruner:
    """Steps are epochs (1, 2, ...): no trial is pruned before tune.min_epochs, nor before
    tune.min_complete trials are complete."""
    if tune.pruner == "none":
        return optuna.pruners.NopPruner()
    if tune.pruner == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=tune.min_epochs, reduction_factor=tune.reduction_factor)
    else:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials,
                                             n_warmup_steps=tune.min_epochs)
    return IgnoreFailed(CompleteFirst(pruner, tune.min_complete))


class CompleteFirst(optuna.pruners.BasePruner):
    """Prunes nothing until `count` trials are complete, so the study always holds that
    many full-length results. (Hand-written: Optuna's MedianPruner has n_startup_trials,
    its SuccessiveHalvingPruner nothing alike: under ASHA a strong first trial can leave
    it the only complete one.) The inner pruner still judges every report, so ASHA
    records the rungs these trials reach, as later trials' rivals."""

    def __init__(self, pruner: optuna.pruners.BasePruner, count: int):
        self.pruner, self.count = pruner, count

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        verdict = self.pruner.prune(study, trial)
        return verdict and len(study.get_trials(deepcopy=False,
                                                states=(TrialState.COMPLETE,))) >= self.count


class IgnoreFailed(optuna.pruners.BasePruner):
    """Judges a trial as if failed trials never ran: a trial killed mid-run is rerun, and
    its partial curve must not count a second time beside its rerun's."""

    def __init__(self, pruner: optuna.pruners.BasePruner):
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.pruner.prune(_WithoutFailed(study), trial)


class _WithoutFailed:
    """The study as a pruner reads it, minus its failed trials."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name):
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.state != TrialState.FAIL]


def suggest(trial: optuna.Trial, space: dict[str, SpaceEntry]) -> dict[str, Any]:
    """One value per setting: drawn for ranges and choices, as given for fixed ones."""
    values = {}
    for name, entry in space.items():
        if isinstance(entry, Range):
            draw = trial.suggest_int if entry.integer else trial.suggest_float
            values[name] = draw(name, entry.low, entry.high, log=entry.log)
        elif isinstance(entry, Choices):
            values[name] = trial.suggest_categorical(name, entry.values)
        else:
            values[name] = entry.value
    return values


def trial_values(trial: FrozenTrial, space: dict[str, SpaceEntry]) -> dict[str, Any]:
    """Every setting of a finished trial: the values it drew, and the fixed ones."""
    return {name: trial.params[name] if name in trial.params else entry.value
            for name, entry in space.items()}


# --- running trials ---------------------------------------------------------------------


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def best_complete(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest value, the earliest on a tie. (Optuna's
    study.best_trial leaves ties to the database's order on PostgreSQL.)"""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=ranking, default=None)


def ranking(trial: FrozenTrial) -> tuple[float, int]:
    """Higher value first; on a tie the earlier trial, which a later one may finish
    before when several processes run trials."""
    return trial.value, -trial.number


def retry_interrupted(study: optuna.Study, wanted: int) -> list[int]:
    """Fail the trials a killed run left RUNNING, then queue one rerun (same params) of
    each failed trial not rerun yet. Only for a study no other process runs right now."""
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # As optuna.storages.fail_stale_trials does; study.tell would run the sampler's
        # after_trial hook, which must not run outside optimize().
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get(RETRY_OF) for t in trials}
    room = wanted - len(finished_trials(study))
    queued = [t.number for t in trials if t.state == TrialState.FAIL and t.number not in rerun]
    for number in queued[:max(0, room)]:
        rerun_failed(study, trials[number])
    return queued[:max(0, room)]


def rerun_failed(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a rerun of a failed trial with its settings. Unlike Optuna's
    RetryHeartbeatStaleTrialCallback it copies no system attrs: they hold the pruner's
    rung records, which would let the rerun skip the rungs its first run passed."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})


# --- filling the study, alone or side by side -------------------------------------------
#
# Optuna's MaxTrialsCallback stops a worker only after its trial ends, so workers that
# start together overshoot. Here a process counts the trials and claims the next one under
# a lock (storage.StudyLock): every trial that is not FAIL holds a slot, so the study
# never holds more than n. A trial whose worker died turns FAIL through the storage's
# heartbeat; its rerun (a WAITING copy, from storage.RerunStaleTrial) takes over
# the slot and is run by whichever process looks next. A restarted database server drops
# the lock with its connection: a process that finds its lock gone once it has claimed
# counts again, and gives the trial up if another claimed the same slot meanwhile. With
# one process and no lock this is a plain loop of one-trial `optimize` calls.

HOLDS_A_SLOT = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
Counts = Counter  # how many trials are in each TrialState


class NoLock:
    """For a study only one process runs."""

    def acquire(self) -> None: ...

    def release(self) -> bool:
        return True  # held all along


class ClaimLost(Exception):
    """A trial claimed while the lock was gone, in a slot another process claimed too."""


def count_states(study: optuna.Study) -> Counts:
    return Counter(trial.state for trial in study.get_trials(deepcopy=False))


def optimize_until_full(study: optuna.Study, objective: Callable[[optuna.Trial], float],
                        n_trials: int, lock=None,
                        before_trial: Callable[[Counts], None] | None = None,
                        on_trial: Callable[[FrozenTrial], None] | None = None,
                        on_wait: Callable[[Counts], None] | None = None,
                        poll_seconds: float = 2.0) -> None:
    """Run `objective` trial by trial until `n_trials` are COMPLETE or PRUNED.

    before_trial(counts) runs under the lock just before a trial is claimed (to seed the
    sampler); on_trial(frozen_trial) after each trial this process ran. When every slot
    is taken by other processes' trials, wait until they finish or one turns out dead;
    on_wait(counts) is told once per change while waiting. Without a lock this process
    is the study's only one: a trial it finds RUNNING has no owner to wait for (the
    caller fails those first, retry_interrupted), so it stops instead of waiting forever.
    """
    alone, lock = lock is None, lock or NoLock()

    def slots_taken() -> int:
        counts = count_states(study)
        return sum(counts[state] for state in HOLDS_A_SLOT)

    def released(trial):
        if not lock.release():  # claimed: other processes may count and claim now
            lock.acquire()  # ... but the lock had gone: was the slot free?
            try:
                if slots_taken() > n_trials:
                    raise ClaimLost  # FAIL, which holds no slot
            finally:
                lock.release()
        return objective(trial)

    waited_for = None
    while True:
        lock.acquire()
        ran = []
        try:
            optuna.storages.fail_stale_trials(study)  # a no-op without heartbeats
            counts = count_states(study)
            if sum(counts[state] for state in FINISHED) >= n_trials:
                return
            taken = sum(counts[state] for state in HOLDS_A_SLOT)
            if taken < n_trials or counts[TrialState.WAITING]:
                if before_trial is not None:
                    before_trial(counts)
                # ask() inside takes a WAITING retry first, else samples a new trial.
                try:
                    study.optimize(released, n_trials=1, catch=(),
                                   callbacks=[lambda _, trial, ran=ran: ran.append(trial)])
                except ClaimLost:
                    continue  # count and claim again
                except Exception as exc:
                    error = _masked_pipeline_error(exc)
                    if error is None:
                        raise
                    raise error from None
        finally:
            lock.release()
        if ran:
            waited_for = None
            if on_trial is not None:
                on_trial(ran[0])
            continue
        if alone:
            stuck = [t.number for t in study.get_trials(deepcopy=False,
                                                         states=(TrialState.RUNNING,))]
            raise DataError(f"study {study.study_name}: trial(s) {', '.join(map(str, stuck))} "
                            "RUNNING with no process to run them, and no slot left for a "
                            "new trial")
        if on_wait is not None and counts != waited_for:
            on_wait(counts)
        waited_for = counts
        time.sleep(poll_seconds)


def _masked_pipeline_error(exc: BaseException) -> PipelineError | None:
    """The PipelineError behind exc, if any: Optuna's clean-up after a failed trial can
    mask it with an error of its own (a lost database fails the clean-up too)."""
    while exc is not None and not isinstance(exc, PipelineError):
        exc = exc.__context__
    return exc


OnTrial = Callable[[FrozenTrial, optuna.Study], None]


def run_trials(study: optuna.Study, tune: TuneParams, objective: Callable[[optuna.Trial], float],
               on_trial: OnTrial | None = None, lock=None,
               on_wait: Callable[[Counts], None] | None = None) -> None:
    """Run trials one at a time until the study holds the trials wanted (complete plus
    pruned, whoever ran them): the stage runs this loop, and so does a worker sharing the
    study through a database (`lock` then keeps the count exact, see above).

    Each trial's sampler is seeded from the trials finished or under way when it starts:
    with one process that is the finished count (a resumed study draws as an
    uninterrupted one), and processes running side by side never share a seed."""

    def seed_sampler(counts: Counts) -> None:
        started = sum(counts[state] for state in (*FINISHED, TrialState.RUNNING))
        study.sampler = make_sampler(tune, started)

    optimize_until_full(study, objective, trials_wanted(tune), lock=lock,
                        before_trial=seed_sampler, on_wait=on_wait,
                        on_trial=None if on_trial is None else lambda t: on_trial(t, study))


# --- the best model -----------------------------------------------------------------------


def keep_if_best(trial: optuna.Trial, value: float, store: FileSystemArtifactStore,
                 write_model: Callable[[Path], None]) -> bool:
    """Store this trial's model if it beats every complete trial, and drop the one it
    beats: the study holds one model, the best complete trial's own weights."""
    previous = best_complete(trial.study)
    if previous is not None and (value, -trial.number) <= ranking(previous):
        return False
    with tempfile.TemporaryDirectory(prefix="tune-model-") as folder:
        path = Path(folder) / MODEL_ARTIFACT
        write_model(path)
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    if previous is not None:
        for meta in get_all_artifact_meta(previous, storage=trial.study._storage):
            try:
                store.remove(meta.artifact_id)
            except ArtifactNotFound:
                pass
    return True


def winner(study: optuna.Study) -> FrozenTrial:
    """The best complete trial of a finished study, which must have one."""
    best = best_complete(study)
    if best is None:
        raise DataError(f"study {study.study_name}: no trial completed")
    return best


def best_model_reader(study: optuna.Study, store: FileSystemArtifactStore,
                      missing_hint: str | None = None):
    """(best complete trial, an open binary reader of its model)."""
    best = winner(study)
    for meta in get_all_artifact_meta(best, storage=study._storage):
        try:
            return best, store.open_reader(meta.artifact_id)
        except ArtifactNotFound:
            break
    raise DataError(missing_hint or f"{STUDY_DIR}: the model of the best trial ({best.number}) "
                    f"is missing; delete {STUDY_DIR} to run the search afresh")
