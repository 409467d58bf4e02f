"""One tune trial: train the configuration the sampler drew, report validation accuracy
after every epoch, stop when the pruner says so, and keep the model if it is the best
complete one so far. This is the Keras side of the search; pipeline/tuning/study.py is the
Optuna side.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import keras
import numpy as np
import optuna

from pipeline.core.modules import imported_closure, is_plumbing, module_file
from pipeline.data import prepared
from pipeline.training import fitting, model
from pipeline.tuning import space, study

HISTORY = "history"  # user attr: the per-epoch numbers Keras logged (loss, accuracy, val_*)


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

    def __init__(self, tune: space.TuneParams, train: fitting.Split, val: fitting.Split,
                 store: optuna.artifacts.FileSystemArtifactStore):
        self.tune, self.train, self.val, self.store = tune, train, val, store

    def __call__(self, trial: optuna.Trial) -> float:
        values = study.suggest(trial, self.tune.space)
        model_settings, train_settings = space.trial_settings(values, self.tune.seed)
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


def trial_code() -> list[Path]:
    """The files a trial's result depends on: this module and every project module it
    imports (pipeline/core/modules.py reads them from the sources), and the reader of the
    splits it trains on, less the plumbing, which dvc.yaml does not list as deps either."""
    modules = imported_closure(__name__) | imported_closure(prepared.__name__)
    return [module_file(name) for name in sorted(modules) if not is_plumbing(name)]


def code_digest() -> str:
    """The trial code and library versions: changing any of them starts a new study
    instead of reusing trials trained by other code (and reruns tune: the files are
    its deps)."""
    files = trial_code()
    backend = keras.backend.backend()
    versions = f"optuna {optuna.__version__} keras {keras.__version__} " \
               f"{backend} {importlib.import_module(backend).__version__} numpy {np.__version__}"
    return hashlib.sha256(f"{study.file_digest(files)} {versions}".encode()).hexdigest()
