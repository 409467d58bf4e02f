"""The ablation's runs: the baseline configuration (params.yaml's model and train) and each
variant of it (one knob changed), each trained once per seed on the same training path as
the train stage (fitting.fit), then scored on the validation and test splits.

Runs of one seed differ only in the variant's overrides; so the difference to the
baseline is paired by seed (pipeline/ablation/effects.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping

import keras
import numpy as np
import pandas as pd

from pipeline.ablation import effects
from pipeline.core.params import AblationParams, ModelParams, TrainParams
from pipeline.training.fitting import Split, even_batches, fit

PREDICT_BATCH = 2048  # inference batch at most; does not change the numbers


@dataclasses.dataclass(frozen=True)
class Run:
    variant: str
    change: str
    overrides: Mapping[str, Any]
    seed: int
    model: ModelParams
    train: TrainParams


def configured(model: ModelParams, train: TrainParams, overrides: Mapping[str, Any],
               seed: int, epochs: int) -> tuple[ModelParams, TrainParams]:
    """The baseline's settings with the overrides (already checked by params.py), the
    run's seed, and the ablation's epochs unless the variant sets its own."""
    names = set(ModelParams.field_names())
    model_changes = {k: tuple(v) if k == "hidden_units" else v
                     for k, v in overrides.items() if k in names}
    train_changes = {"epochs": epochs, "seed": seed,
                     **{k: v for k, v in overrides.items() if k not in names}}
    # replace() builds anew, so pydantic checks the combination once more
    return (dataclasses.replace(model, **model_changes),
            dataclasses.replace(train, **train_changes))


def plan(settings: AblationParams, model: ModelParams, train: TrainParams) -> list[Run]:
    """Every run, seed by seed (so an interrupted log already pairs variants), the baseline
    first within each seed."""
    baseline = {**dataclasses.asdict(model), **dataclasses.asdict(train),
                "epochs": settings.epochs}
    variants = [{}, *settings.variants]
    return [Run(effects.variant_name(overrides), effects.change_phrase(overrides, baseline),
                overrides, seed, *configured(model, train, overrides, seed, settings.epochs))
            for seed in settings.seeds for overrides in variants]


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (the first includes tracing the step)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def accuracy(model: keras.Model, split: Split) -> float:
    x, y = split
    batch = even_batches(len(x), PREDICT_BATCH)  # one shape: one compiled program
    predicted = np.asarray(model.predict(x, batch_size=batch, verbose=0)).argmax(axis=1)
    return float(np.mean(predicted == y))


def run_one(run: Run, train: Split, val: Split, test: Split) -> dict:
    timer = EpochTimer()
    result = fit(run.model, run.train, train, val, verbose=False, callbacks=[timer],
                 label=f"ablate {run.variant}")
    return effects.run_row(run.variant, run.change, run.overrides, run.seed, result.history,
                           result.val_accuracy, accuracy(result.model, test), timer.seconds,
                           result.seconds)


def run_all(runs: list[Run], train: Split, val: Split, test: Split,
            on_run: Callable[[int, dict], None] = lambda i, row: None) -> pd.DataFrame:
    """Train every run in order; `on_run(index, row)` after each (progress lines)."""
    # A fresh model per run is the point here; TensorFlow's retracing warning is noise.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    rows = []
    for i, run in enumerate(runs):
        keras.utils.clear_session(free_memory=True)  # one model in memory at a time
        rows.append(run_one(run, train, val, test))
        on_run(i, rows[-1])
    return pd.DataFrame(rows, columns=list(effects.RUN_COLUMNS))
