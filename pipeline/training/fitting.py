"""The one training path shared by train and tune: seeded, deterministic and fast.

Keras's own `model.fit` on the JAX backend (pipeline/training/engine.py), fed full batches
of NumPy rows: XLA compiles the whole train step, so neither a hand-fused optimizer nor a
tf.data pipeline pays any more (docs/benchmarks.md). `steps_per_execution` still counts:
Keras's loop and callbacks run once per 128 batches instead of once per batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.core.atomic import atomic_dir
from pipeline.core.params import ModelParams, TrainParams
from pipeline.core.runner import format_seconds, log
from pipeline.training.model import build_model, compile_model

STEPS_PER_EXECUTION = 128
MONITOR = "val_accuracy"
VAL_BATCH_SIZE = 1024  # at most, or the training batch if larger: fewer, bigger steps

Split = tuple[np.ndarray, np.ndarray]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras's seed generators (initial weights, dropout masks); on
    TensorFlow, make its ops deterministic too (XLA's CPU programs are deterministic as
    they are)."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch: the numbers, and how long the remaining epochs should take."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs = label, epochs

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        done = epoch + 1
        per_epoch = (time.perf_counter() - self.started) / done
        validation = (f" | val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}"
                      if "val_accuracy" in logs else "")
        log(f"{self.label} epoch {done}/{self.epochs}: loss {logs.get('loss', math.nan):.4f} "
            f"acc {logs.get('accuracy', math.nan):.4f}{validation}"
            f" | {per_epoch:.1f}s/epoch, <= {format_seconds(per_epoch * (self.epochs - done))}"
            " left")


class ShuffledFullBatches(keras.utils.PyDataset):
    """The training rows in a new seeded order every epoch, cut into full batches only.
    Keras's own loop ends an epoch on a smaller last batch: another input shape, for which
    XLA compiles the whole train step a second time for every model. The rows left over
    (fewer than a batch) change with every epoch's order, as with tf.data's drop_remainder."""

    def __init__(self, split: Split, batch_size: int, seed: int):
        super().__init__()
        self.x, self.y = split
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return max(1, len(self.x) // self.batch_size)  # a set smaller than a batch: one

    def __getitem__(self, index: int) -> Split:
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


def even_batches(n: int, at_most: int) -> int:
    """The smallest batch size that splits n rows into as few batches as `at_most` allows:
    6,000 validation rows go in six batches of 1,000, not five of 1,024 and a last of 880,
    whose other shape XLA would compile once more for every model."""
    return math.ceil(n / math.ceil(n / at_most)) if n else at_most


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    val_accuracy: float  # of the returned weights (the best epoch's with early stopping);
    val_loss: float      # NaN without a validation split
    epochs_run: int
    seconds: float


def fit(model_settings: ModelParams, train_settings: TrainParams, train: Split,
        val: Split | None, live_dir: str | Path | None = None, label: str = "train",
        verbose: bool = True, callbacks: Sequence[keras.callbacks.Callback] = ()) -> FitResult:
    """Train a fresh network; with `live_dir`, DVCLive writes per-epoch curves there.
    `callbacks` run after the built-in ones (progress, early stopping, DVCLive). Without
    `val` (a refit on every labelled row) nothing is validated, so nothing can stop early."""
    if val is None and train_settings.early_stopping_patience > 0:
        raise ValueError("early stopping needs a validation split")
    started = time.perf_counter()
    seed_everything(train_settings.seed)
    batches = ShuffledFullBatches(train, train_settings.batch_size, train_settings.seed)
    steps_per_epoch = len(batches)
    model = compile_model(build_model(model_settings), train_settings, steps_per_epoch,
                          steps_per_execution=min(STEPS_PER_EXECUTION, steps_per_epoch))
    val_batch_size = (even_batches(len(val[0]), max(VAL_BATCH_SIZE, train_settings.batch_size))
                      if val else None)
    built_in: list[keras.callbacks.Callback] = []
    if verbose:
        built_in.append(EpochProgress(label, train_settings.epochs))
    if train_settings.early_stopping_patience > 0:
        built_in.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=train_settings.early_stopping_patience,
            restore_best_weights=True))

    def run(live):
        return model.fit(batches, validation_data=val, validation_batch_size=val_batch_size,
                         epochs=train_settings.epochs,
                         callbacks=[*built_in, *live, *callbacks], verbose=0).history

    if live_dir is None:
        history = run([])
    else:
        history = _fit_with_live(run, Path(live_dir), model_settings, train_settings)
    val_loss, val_accuracy = (model.evaluate(*val, batch_size=val_batch_size, verbose=0)
                              if val else (math.nan, math.nan))
    return FitResult(model, {k: [float(v) for v in vs] for k, vs in history.items()},
                     float(val_accuracy), float(val_loss), len(history["loss"]),
                     time.perf_counter() - started)


def _fit_with_live(run, live_dir: Path, model_settings, train_settings) -> dict:
    """Log curves with DVCLive into a temp folder that replaces live_dir on success."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    with atomic_dir(live_dir) as tmp:
        live = Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False, report=None)
        live.log_params({"model": model_settings.plain(), "train": train_settings.plain()})
        return run([DVCLiveCallback(live=live)])

