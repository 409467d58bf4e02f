"""tune stage: search the hyperparameters in params.yaml's `tune` section, keep the best.

Trials are judged on the validation split only; the test split is never read here.
trials.csv is rewritten after every trial (progress), while best_params.json,
metrics.json, the final curves and tuned.keras are written only once the search has
finished, so an interrupted run leaves nothing that looks like a result.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline import NUM_CLASSES, params, search
from pipeline.atomic import atomic_dir, write_json, write_text
from pipeline.stage_runner import format_seconds, log, quiet_tensorflow, run_stage

MODEL_PATH = Path("models/tuned.keras")
REPORT_DIR = Path("reports/tune")
TRIALS_PATH = REPORT_DIR / "trials.csv"
BEST_PARAMS_PATH = REPORT_DIR / "best_params.json"
METRICS_PATH = REPORT_DIR / "metrics.json"
LIVE_DIR = REPORT_DIR / "live"


def trial_settings(stage: params.StageParams, candidate: search.Candidate):
    """Full model and train settings: searched keys from the candidate, the rest declared."""
    return (params.ModelParams.from_params(stage, overrides=candidate),
            params.TrainParams.from_params(stage, overrides=candidate))


def stratified_subset(x: np.ndarray, y: np.ndarray, samples: int, seed: int):
    """A seeded subset with each class's share kept; the full split comes back untouched."""
    if samples >= len(y):
        return x, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=samples, stratify=y,
                               random_state=seed)
    keep.sort()
    return x[keep], y[keep]


class TrialRunner:
    """Trains one candidate on a round's subset; full-split runs also log DVCLive curves,
    so the winner's curves need no second training."""

    def __init__(self, stage, train, val, seed: int, scratch: Path):
        import tensorflow as tf

        # A fresh model per trial is the point here; TensorFlow's retracing warning is noise.
        tf.get_logger().setLevel("ERROR")
        self.stage, self.train, self.val, self.seed = stage, train, val, seed
        self.scratch = scratch
        self.subsets: dict[int, tuple] = {}
        self.runs = 0

    def __call__(self, candidate: search.Candidate, samples: int) -> search.Outcome:
        from pipeline.fitting import fit

        model_settings, train_settings = trial_settings(self.stage, candidate)
        if samples not in self.subsets:
            self.subsets[samples] = stratified_subset(*self.train, samples, self.seed)
        self.runs += 1
        full = samples >= len(self.train[1])
        live_dir = self.scratch / f"run-{self.runs}" if full else None
        result = fit(model_settings, train_settings, self.subsets[samples], self.val,
                     live_dir=live_dir, label="tune", verbose=False)
        return search.Outcome(result.val_accuracy, result.val_loss, train_settings.epochs,
                              result.epochs_run, result.seconds,
                              artifact=(result.model, live_dir))


# --- reports -------------------------------------------------------------------------


def plain(value):
    """A params value as params.yaml spells it: lists for tuples, JSON true/false."""
    return list(value) if isinstance(value, tuple) else value


def cell(value) -> str:
    value = plain(value)
    return value if isinstance(value, str) else json.dumps(value)


def trials_csv(trials: list[search.Trial], names: list[str]) -> str:
    """One row per trial; param_* columns as in scikit-learn's cv_results_."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "round", "samples", "epochs", *(f"param_{n}" for n in names),
                     "val_accuracy", "val_loss", "epochs_run", "seconds"])
    for t in trials:
        o = t.outcome
        writer.writerow([t.number, t.round, t.samples, o.epochs,
                         *(cell(t.params[n]) for n in names),
                         f"{o.val_accuracy:.6f}", f"{o.val_loss:.6f}", o.epochs_run,
                         f"{o.seconds:.1f}"])
    return out.getvalue()


def best_params_record(best: search.Trial, stage, method: str) -> dict:
    model_settings, train_settings = trial_settings(stage, best.params)
    return {
        "method": method,
        "trial": best.number,
        "val_accuracy": best.outcome.val_accuracy,
        "val_loss": best.outcome.val_loss,
        "params": {name: plain(value) for name, value in best.params.items()},
        "model": {k: plain(v) for k, v in vars(model_settings).items()},
        "train": {k: plain(v) for k, v in vars(train_settings).items()},
    }


def describe(candidate: search.Candidate, names: list[str]) -> str:
    return " ".join(f"{name}={cell(candidate[name])}" for name in names)


def progress_line(trial, trials, rounds, total, names, left: float) -> str:
    """Trial k of n, its budget and params, its score, the round's best, time left."""
    best = min((t for t in trials if t.round == trial.round), key=search.rank_key)
    where = (f"round {trial.round + 1}/{len(rounds)}, " if len(rounds) > 1 else "")
    return (f"tune trial {trial.number}/{total} [{where}{trial.samples} samples, "
            f"{trial.outcome.epochs} epochs] {describe(trial.params, names)}: val_acc "
            f"{trial.outcome.val_accuracy:.4f} (best {best.outcome.val_accuracy:.4f}) | "
            f"{format_seconds(trial.outcome.seconds)}, ~{format_seconds(left)} left")


def write_results(result: search.SearchResult, stage, tune: params.TuneParams,
                  seconds: float) -> None:
    """The finished run's outputs, best_params.json last: its presence marks a result."""
    from pipeline.model import save_model

    model, live_source = result.best_artifact
    with atomic_dir(LIVE_DIR) as tmp:
        shutil.copytree(live_source, tmp, dirs_exist_ok=True)
    save_model(model, MODEL_PATH)
    write_json(METRICS_PATH, {
        "best_val_accuracy": result.best.outcome.val_accuracy,
        "best_val_loss": result.best.outcome.val_loss,
        "trials": len(result.trials),
        "seconds": round(seconds, 1),
    })
    write_json(BEST_PARAMS_PATH, best_params_record(result.best, stage, tune.method))


# --- the stage -----------------------------------------------------------------------


def main() -> None:
    started = time.perf_counter()
    stage = params.load("tune")
    tune = params.TuneParams.from_params(stage)
    candidate_list = search.candidates(tune)
    # Build every candidate's settings now, so a bad value stops before any training.
    epochs = [train_settings.epochs for _, train_settings in
              (trial_settings(stage, c) for c in candidate_list)]
    from pipeline.splits import load_split

    train, val = load_split("train"), load_split("val")
    rounds = search.plan_rounds(tune, len(candidate_list), len(train[1]))
    search.check_rounds(rounds, NUM_CLASSES)
    # TensorFlow loads only after everything above passed, so a bad value fails in a blink.
    quiet_tensorflow()

    names = list(tune.space)
    shown = search.varying_names(tune.space) or names
    total = sum(r.candidates for r in rounds)
    fixed = [n for n in names if n not in shown]
    log(f"tune: {tune.method} search, {len(candidate_list)} candidates, {total} trials over "
        f"{' -> '.join(str(r.samples) for r in rounds)} samples"
        + (f"; fixed {describe(candidate_list[0], fixed)}" if fixed else ""))

    def on_trial(trial, trials):
        write_text(TRIALS_PATH, trials_csv(trials, names))  # progress, not a result
        left = search.seconds_left(trials, rounds, float(np.mean(epochs)), len(val[1]) // 3)
        log(progress_line(trial, trials, rounds, total, shown, left))

    with tempfile.TemporaryDirectory(prefix="tune-curves-") as scratch:
        runner = TrialRunner(stage, train, val, tune.seed, Path(scratch))
        result = search.run_search(candidate_list, rounds, runner, on_trial)
        # The best last-round trial trained this very configuration on the full training
        # split with its full epoch budget and the same seed; training is deterministic,
        # so its model and curves are exactly what a retraining would give.
        write_results(result, stage, tune, time.perf_counter() - started)
    log(f"tune: best val_accuracy {result.best.outcome.val_accuracy:.4f} (trial "
        f"{result.best.number}: {describe(result.best.params, shown)}); wrote {MODEL_PATH}, "
        f"{BEST_PARAMS_PATH}")


if __name__ == "__main__":
    run_stage("tune", main)
