"""tune stage: an Optuna search over params.yaml's `tune.space`, judged on the validation
split (the test split is never read here), each trial pruned by epochs when it falls
behind.

The study lives in reports/tune/study/ (a persist output, so DVC keeps it): an
interrupted `dvc repro tune` continues it and reruns only what is missing, and a study
that already holds its trials is not run again. The outputs are written once, from the
finished study: the final model (with tune.refit, the best complete trial's settings
trained again on train and validation together, as GridSearchCV refits on all its data;
without, that trial's own model, kept in the study's artifact store), the winner's
curves, and tables of every trial.

With FMNIST_TUNE_STORAGE the study lives in PostgreSQL instead (pipeline/tuning/storage.py):
`python -m pipeline.tune --worker` on any machine joins it and runs trials, and the stage
runs trials too, waits until the study is full and alone writes the outputs.
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
from optuna.trial import TrialState

from pipeline.core import params
from pipeline.core.atomic import all_or_nothing, atomic_dir, atomic_path, write_json, write_text
from pipeline.core.errors import PipelineError
from pipeline.core.paths import (
    BEST_PARAMS,
    LIVE_DIRS,
    MODELS,
    TRIALS,
    TUNE_CURVES,
    TUNE_DIR,
    TUNE_IMPORTANCE,
    TUNE_METRICS,
)
from pipeline.core.runner import format_seconds, log, program, quiet_tensorflow, run_stage
from pipeline.data.prepared import Split, load_split, split_path
from pipeline.training import engine
from pipeline.tuning import reports, space, storage, study

MODEL_PATH = MODELS["tuned"]
# A machine setting, not a param: it changes speed, and may change float rounding in the
# last bits (the work is split differently), but not what the search is.
THREADS_ENV = "FMNIST_TUNE_THREADS"


# --- progress -------------------------------------------------------------------------


def shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def describe(values: dict, names: list[str]) -> str:
    return " ".join(f"{name}={shown(values[name])}" for name in names if name in values)


def trial_line(trial, opened, tune: space.TuneParams, wanted: int) -> str:
    """The trial's settings, its score or where it was pruned, the best so far, what is left."""
    done = len(study.finished_trials(opened))
    epochs = len(trial.intermediate_values)
    if trial.state == TrialState.PRUNED:
        outcome = f"pruned at epoch {epochs} (val_acc {trial.value:.4f})"
    else:
        outcome = f"val_acc {trial.value:.4f} after {epochs} epochs"
    best = study.best_complete(opened)
    so_far = f"best {best.value:.4f} (trial {best.number})" if best else "none complete yet"
    return (f"tune trial {trial.number} [{done}/{wanted}] {describe(trial.params, tune.searched)}"
            f": {outcome} | {so_far} | {format_seconds(trial.duration.total_seconds())}, "
            f"{wanted - done} left")


def start_line(opened, tune: space.TuneParams, wanted: int, retried: list[int],
               where: str) -> str:
    done = len(study.finished_trials(opened))
    first = f"; the first {tune.min_complete} run to the end" if tune.min_complete else ""
    pruning = {"asha": f"asha pruner (from epoch {tune.min_epochs}, keeps the top "
                       f"1/{tune.reduction_factor} at each rung{first})",
               "median": f"median pruner (from epoch {tune.min_epochs}, after "
                         f"{tune.startup_trials} complete trials{first})",
               "none": "no pruning"}[tune.pruner]
    fixed = {name: entry.value for name, entry in tune.space.items()
             if isinstance(entry, space.Fixed)}
    resumed = f"; {done} finished already" if done else ""
    if retried:
        resumed += f", rerunning interrupted trial(s) {', '.join(map(str, retried))}"
    return (f"study {opened.study_name} in {where}: {wanted} trials, "
            f"{tune.sampler} sampler, {pruning}{resumed}; searching {', '.join(tune.searched)}"
            + (f"; fixed {describe(fixed, list(fixed))}" if fixed else ""))


# --- outputs --------------------------------------------------------------------------


def write_live(history: dict[str, list[float]], model_settings, train_settings) -> None:
    """The best trial's per-epoch curves, in the layout DVCLive's Keras callback writes."""
    from dvclive import Live
    from dvclive.utils import standardize_metric_name

    with atomic_dir(LIVE_DIRS["tuned"]) as tmp:
        live = Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False, report=None)
        live.log_params({"model": model_settings.plain(), "train": train_settings.plain()})
        for epoch in range(len(history["loss"])):
            for metric, values in history.items():
                live.log_metric(standardize_metric_name(metric, "dvclive.keras"), values[epoch])
            live.next_step()
        live.end()


def copy_best_model(opened, home: storage.StudyHome) -> None:
    """The best trial's own model, from the study's artifact store."""
    from pipeline.training.model import load_model

    hint = None
    afresh = f"delete {study.STUDY_DIR} to run the search afresh"
    if home.shared:
        hint = (f"{storage.ARTIFACTS_ENV}: the model of the best trial is not there; "
                "every machine running trials must write to that same folder")
        afresh = (f"delete the study {opened.study_name} from the database "
                  "(optuna delete-study) to run the search afresh")
    best, reader = study.best_model_reader(opened, home.artifacts, hint)
    with reader, atomic_path(MODEL_PATH, suffix=".keras") as tmp:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(reader, out)
        load_model(tmp, shown=f"{reader.name} (the model of the best trial, {best.number})",
                   remedy=afresh)  # a damaged copy never replaces the previous output


def refit(best, model_settings, train_settings, rows: Split) -> None:
    """The best trial's settings trained afresh on `rows`, its seed included, so a rerun
    gives the same bytes on the same machine."""
    import keras

    from pipeline.training import fitting
    from pipeline.training.model import save_model

    log(f"tune: refitting trial {best.number}'s settings on train + val "
        f"({len(rows[0]):,} images), {train_settings.epochs} epochs")
    keras.utils.clear_session(free_memory=True)  # layer names as in a fresh process
    result = fitting.fit(model_settings, train_settings, rows, None, label="tune refit")
    save_model(result.model, MODEL_PATH)  # atomic, and held back with the other outputs
    log(f"tune: refit done in {format_seconds(result.seconds)}")


def write_outputs(opened, best, tune: space.TuneParams, home: storage.StudyHome,
                  train: Split, val: Split) -> None:
    """Everything from the finished study and its winner `best`, landing together: a
    failure on the way (a full disk) keeps the previous set whole. best_params.json last:
    it marks a result."""
    with all_or_nothing():
        _write_outputs(opened, best, tune, home, train, val)


def _write_outputs(opened, best, tune: space.TuneParams, home: storage.StudyHome,
                   train: Split, val: Split) -> None:
    from pipeline.tuning.objective import HISTORY

    model_settings, train_settings = space.trial_settings(
        study.trial_values(best, tune.space), tune.seed)
    if tune.refit:
        rows = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
        refit(best, model_settings, train_settings, rows)
        refit_rows = len(rows[0])
    else:
        copy_best_model(opened, home)
        refit_rows = None
    write_live(best.user_attrs[HISTORY], model_settings, train_settings)

    trials = opened.get_trials(deepcopy=False)
    table = reports.trials_table(opened)
    write_text(TRIALS, table.to_csv(index=False))
    write_text(TUNE_CURVES, reports.curves_table(trials).to_csv(index=False))
    write_text(TUNE_IMPORTANCE,
               reports.importance_table(trials, tune.seed).to_csv(index=False))
    states = table["state"].value_counts()
    write_json(TUNE_METRICS, {
        "best_val_accuracy": best.value,
        "best_trial": best.number,
        "trials": int(sum(states.get(state, 0) for state in reports.FINISHED_NAMES)),
        "complete": int(states.get(reports.COMPLETE, 0)),
        "pruned": int(states.get(reports.PRUNED, 0)),
        "failed": int(states.get(reports.FAIL, 0)),
        "seconds": round(float(table["seconds"].sum()), 1),  # all trials, across resumes
    })
    write_json(BEST_PARAMS, {
        "study": opened.study_name,
        "trial": best.number,
        "val_accuracy": best.value,
        "params": best.params,
        "model": model_settings.plain(),
        "train": train_settings.plain(),
        "refit_images": refit_rows,  # null: the final model is the trial's own
    })


# --- the stage and its workers ---------------------------------------------------------


def waiting_line(counts, wanted: int) -> str:
    done = sum(counts[state] for state in study.FINISHED)
    return (f"tune: {done}/{wanted} trials finished, the rest are under way elsewhere: "
            "waiting for them")


def run(worker: bool) -> None:
    """The stage (worker=False): fill the study, then write the outputs from it. A worker
    joins the same shared study, runs trials until it is full and writes nothing else."""
    tune = space.TuneParams.from_params(params.load("tune"))
    threads = engine.threads_from(THREADS_ENV)  # before anything connects or loads
    if worker and storage.storage_url() is None:
        raise PipelineError(
            f"--worker joins a study shared through a database: set "
            f"{storage.STORAGE_ENV}=postgresql://user@host/database and "
            f"{storage.ARTIFACTS_ENV}=/a/shared/folder (docs/tuning-on-many-machines.md)")
    home = storage.open_home()  # an unreachable database fails before TensorFlow loads
    # Keras loads only after the params passed, so a bad value fails in a blink;
    # FMNIST_TUNE_THREADS=n lets several workers share one machine's cores.
    engine.use(engine.TRAINING, threads=threads)
    quiet_tensorflow()
    from pipeline.tuning import objective

    study.quiet_optuna()
    train, val = load_split("train"), load_split("val")
    name = study.study_name(tune, study.file_digest([split_path("train"), split_path("val")]),
                            objective.code_digest())
    opened = study.open_study(tune, home.storage, name)
    wanted = study.trials_wanted(tune)
    # A shared study's RUNNING trials may be alive elsewhere: heartbeats judge those.
    retried = [] if home.shared else study.retry_interrupted(opened, wanted)
    log(("tune worker: joined " if worker else "tune: ")
        + start_line(opened, tune, wanted, retried, home.where))
    started = time.perf_counter()
    # No lock on the embedded file: this process is its only one, and never waits.
    lock = storage.StudyLock(home.storage, name) if home.shared else None
    try:
        study.run_trials(opened, tune, objective.Objective(tune, train, val, home.artifacts),
                         on_trial=lambda trial, s: log(trial_line(trial, s, tune, wanted)),
                         lock=lock, on_wait=lambda counts: log(waiting_line(counts, wanted)))
    finally:
        if lock is not None:
            lock.close()
    best = study.winner(opened)
    searched = format_seconds(time.perf_counter() - started)
    if worker:
        log(f"tune worker: the study holds its {wanted} trials; best val_accuracy "
            f"{best.value:.4f} (trial {best.number}) after {searched} in this worker; "
            "`dvc repro tune` writes the outputs")
        return
    if home.shared:
        study.STUDY_DIR.mkdir(parents=True, exist_ok=True)  # DVC expects the output
    write_outputs(opened, best, tune, home, train, val)
    log(f"tune: best val_accuracy {best.value:.4f} (trial {best.number}: "
        f"{describe(best.params, tune.searched)}) after {searched} of search in this run; "
        f"wrote {MODEL_PATH}, {TUNE_DIR}/")


def main() -> None:
    run(worker=False)


WORKER_HELP = (f"join the study in the database {storage.STORAGE_ENV} names (its best "
               f"model goes to the folder {storage.ARTIFACTS_ENV} names; "
               f"{THREADS_ENV}=n sets the threads), run trials until it is full, and write "
               "no outputs")


def cli(argv: list[str] | None = None) -> None:
    """`python -m pipeline.tune [--worker]`: the stage, or one more worker."""
    parser = argparse.ArgumentParser(
        prog=program("pipeline.tune"),
        description="The tune stage (`dvc repro tune` runs it), or with --worker one more "
                    "process filling the same study through a shared database.")
    parser.add_argument("--worker", action="store_true", help=WORKER_HELP)
    worker = parser.parse_args(argv).worker
    run_stage("tune worker" if worker else "tune", lambda: run(worker))


def worker_cli(argv: list[str] | None = None) -> None:
    """The `fmnist-tune-worker` command: `python -m pipeline.tune --worker`."""
    parser = argparse.ArgumentParser(description=WORKER_HELP[0].upper() + WORKER_HELP[1:] + ".")
    parser.parse_args(argv)
    run_stage("tune worker", lambda: run(worker=True))


if __name__ == "__main__":
    cli()
