"""One tune trial: train the configuration the sampler drew, report validation accuracy
after every epoch, stop when the pruner says so, and keep the model if it is the best
complete one so far. This is the TensorFlow side of the search; pipeline/tuning/study.py is the
Optuna side.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import keras
import numpy as np
import optuna
import tensorflow as tf

from pipeline.training import fitting
from pipeline.training import model
from pipeline.core import params
from pipeline.data import prepared
from pipeline.tuning import study
from pipeline.core.errors import PipelineError

HISTORY = "history"  # user attr: the per-epoch numbers Keras logged (loss, accuracy, val_*)
THREADS_ENV = "FMNIST_TUNE_THREADS"


def limit_threads() -> None:
    """FMNIST_TUNE_THREADS=n gives TensorFlow n threads (intra- and inter-op) instead of
    the training path's default (one op thread fewer than cores), so that several
    workers can share one machine's cores. A machine setting like the CPU kind, not a
    param: it changes speed, and may change float rounding in the last bits (the work is
    split differently), but not what the search is. Call before TF runs an op."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise PipelineError(f"{THREADS_ENV}={value}: must be a whole number of threads >= 1")
    tf.config.threading.set_intra_op_parallelism_threads(int(value))
    tf.config.threading.set_inter_op_parallelism_threads(int(value))


class PruneOnEpoch(keras.callbacks.Callback):
    """Reports val accuracy to the trial after each epoch (step = epoch, from 1) and stops
    training when the pruner says so. Written here rather than taken from
    optuna-integration, whose Keras extra pulls the full tensorflow next to tensorflow-cpu."""

    def __init__(self, trial: optuna.Trial, epochs: int):
        super().__init__()
        self.trial, self.epochs = trial, epochs
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        self.trial.report(float(logs["val_accuracy"]), step)
        # Never at the last epoch: a trial that ran its whole budget is complete.
        if step < self.epochs and self.trial.should_prune():
            self.pruned_at = step
            self.model.stop_training = True


class Objective:
    """Called by Optuna once per trial; returns the trial's validation accuracy."""

    def __init__(self, tune: params.TuneParams, train: fitting.Split, val: fitting.Split,
                 store: optuna.artifacts.FileSystemArtifactStore):
        # A fresh model per trial is the point here; TensorFlow's retracing warning is noise.
        tf.get_logger().setLevel("ERROR")
        self.tune, self.train, self.val, self.store = tune, train, val, store

    def __call__(self, trial: optuna.Trial) -> float:
        values = study.suggest(trial, self.tune.space)
        model_settings, train_settings = params.trial_settings(values, self.tune.seed)
        keras.utils.clear_session(free_memory=True)  # one model in memory at a time
        pruning = PruneOnEpoch(trial, train_settings.epochs)
        result = fitting.fit(model_settings, train_settings, self.train, self.val,
                     callbacks=[pruning], verbose=False)
        trial.set_user_attr(HISTORY, result.history)
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {pruning.pruned_at}")
        study.keep_if_best(trial, result.val_accuracy, self.store,
                           lambda path: model.save_model(result.model, path))
        return result.val_accuracy


def code_digest() -> str:
    """The code and library versions a trial's result depends on: changing any of them
    starts a new study instead of reusing trials trained by other code."""
    modules = (params, study, fitting, model, prepared, sys.modules[__name__])
    versions = f"optuna {optuna.__version__} tf {tf.__version__} keras {keras.__version__} " \
               f"numpy {np.__version__}"
    files = study.file_digest(Path(m.__file__) for m in modules)
    return hashlib.sha256(f"{files} {versions}".encode()).hexdigest()
