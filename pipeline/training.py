"""The one training path shared by train and tune: seeded, deterministic and fast.

Speed on a 2-core CPU comes from two settings measured in bench/train_speed.py: the
data are fed through a tf.data pipeline (shuffle, batch, prefetch) instead of NumPy
arrays, and `steps_per_execution` runs many batches per call into TensorFlow.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from pipeline.atomic import atomic_dir
from pipeline.cli import format_seconds, log
from pipeline.model import build_model, compile_model
from pipeline.params import ModelParams, TrainParams

STEPS_PER_EXECUTION = 128
MONITOR = "val_accuracy"

Split = tuple[np.ndarray, np.ndarray]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int,
                 shuffle_seed: int | None = None) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        data = data.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
        log(f"{self.label} epoch {done}/{self.epochs}: loss {logs.get('loss', math.nan):.4f} "
            f"acc {logs.get('accuracy', math.nan):.4f} | val_loss "
            f"{logs.get('val_loss', math.nan):.4f} val_acc {logs.get('val_accuracy', math.nan):.4f}"
            f" | {per_epoch:.1f}s/epoch, <= {format_seconds(per_epoch * (self.epochs - done))}"
            " left")


@dataclass
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    val_accuracy: float  # of the returned weights (the best epoch's with early stopping)
    val_loss: float
    epochs_run: int
    seconds: float


def fit(model_settings: ModelParams, train_settings: TrainParams, train: Split, val: Split,
        live_dir: str | Path | None = None, label: str = "train", verbose: bool = True,
        callbacks: Sequence[keras.callbacks.Callback] = ()) -> FitResult:
    """Train a fresh network; with `live_dir`, DVCLive writes per-epoch curves there.
    `callbacks` run after the project's own (tune's pruning callback, for one)."""
    started = time.perf_counter()
    seed_everything(train_settings.seed)
    steps_per_epoch = math.ceil(len(train[0]) / train_settings.batch_size)
    model = compile_model(build_model(model_settings), train_settings, steps_per_epoch,
                          steps_per_execution=min(STEPS_PER_EXECUTION, steps_per_epoch))
    train_data = make_dataset(*train, train_settings.batch_size,
                              shuffle_seed=train_settings.seed)
    val_data = make_dataset(*val, batch_size=max(1024, train_settings.batch_size))
    own: list[keras.callbacks.Callback] = []
    if verbose:
        own.append(EpochProgress(label, train_settings.epochs))
    if train_settings.early_stopping_patience > 0:
        own.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=train_settings.early_stopping_patience,
            restore_best_weights=True))

    def run(extra):
        return model.fit(train_data, validation_data=val_data, epochs=train_settings.epochs,
                         callbacks=own + list(callbacks) + extra, shuffle=False,
                         verbose=0).history

    if live_dir is None:
        history = run([])
    else:
        history = _fit_with_live(run, Path(live_dir), model_settings, train_settings)
    val_loss, val_accuracy = model.evaluate(val_data, verbose=0)
    return FitResult(model, {k: [float(v) for v in vs] for k, vs in history.items()},
                     float(val_accuracy), float(val_loss), len(history["loss"]),
                     time.perf_counter() - started)


def _fit_with_live(run, live_dir: Path, model_settings, train_settings) -> dict:
    """Log curves with DVCLive into a temp folder that replaces live_dir on success."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    with atomic_dir(live_dir) as tmp:
        live = Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False, report=None)
        live.log_params({"model": _plain(model_settings), "train": _plain(train_settings)})
        return run([DVCLiveCallback(live=live)])


def _plain(settings) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
