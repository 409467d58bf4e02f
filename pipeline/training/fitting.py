"""The one training path shared by train and tune: seeded, deterministic and fast.

Where an epoch's time went, and what this path does about it (bench/train_speed.py,
README "Benchmarks"): Keras's Adam (fused into one kernel, pipeline/training/model.py), the
input pipeline (a seeded permutation of indices gathered from in-memory tensors instead
of a shuffle buffer of images), Python's overhead per batch (`steps_per_execution` runs
128 batches per call into TensorFlow) and cores fought over by TensorFlow's ops and
tf.data (one core is left to the latter).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.core.atomic import atomic_dir
from pipeline.core.runner import format_seconds, log
from pipeline.training.model import build_model, compile_model
from pipeline.core.params import ModelParams, TrainParams

STEPS_PER_EXECUTION = 128
MONITOR = "val_accuracy"

Split = tuple[np.ndarray, np.ndarray]


def leave_a_core_to_the_input_pipeline() -> None:
    """One thread fewer than cores for TensorFlow's ops, so tf.data's batches and Keras's
    loop run beside them instead of stalling both: 1.3x faster per epoch on 2 cores
    (bench/train_speed.py). Settable only before TensorFlow's first op; if one ran
    already, the current setting stays (it changes speed: the weights measured here were
    bitwise the same with 1 and 2 threads). A count set explicitly before (a tune
    worker's FMNIST_TUNE_THREADS) wins."""
    if tf.config.threading.get_intra_op_parallelism_threads():
        return
    threads = max(1, (os.cpu_count() or 1) - 1)
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int,
                 shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches gathered from in-memory tensors. To shuffle, each pass draws one seeded
    permutation of the indices (the same sequence of epochs on every run): far cheaper
    than a shuffle buffer that every image passes through (bench/train_speed.py)."""
    images, labels = tf.constant(x), tf.constant(y)
    size, steps = len(x), math.ceil(len(x) / batch_size)

    def batches(order):
        return tf.data.Dataset.range(steps).map(lambda i: (
            tf.gather(images, order[i * batch_size:(i + 1) * batch_size]),
            tf.gather(labels, order[i * batch_size:(i + 1) * batch_size])))

    if shuffle_seed is None:
        orders = tf.data.Dataset.from_tensors(tf.range(size, dtype=tf.int64))
    else:
        orders = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True)
        orders = orders.take(1).map(lambda draw: tf.random.experimental.stateless_shuffle(
            tf.range(size, dtype=tf.int64), seed=tf.stack([tf.constant(shuffle_seed, tf.int64),
                                                           draw])))
    return (orders.flat_map(batches).apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE))


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
    `callbacks` run after the built-in ones (progress, early stopping, DVCLive)."""
    started = time.perf_counter()
    leave_a_core_to_the_input_pipeline()
    seed_everything(train_settings.seed)
    steps_per_epoch = math.ceil(len(train[0]) / train_settings.batch_size)
    model = compile_model(build_model(model_settings), train_settings, steps_per_epoch,
                          steps_per_execution=min(STEPS_PER_EXECUTION, steps_per_epoch))
    train_data = make_dataset(*train, train_settings.batch_size,
                              shuffle_seed=train_settings.seed)
    val_data = make_dataset(*val, batch_size=max(1024, train_settings.batch_size))
    built_in: list[keras.callbacks.Callback] = []
    if verbose:
        built_in.append(EpochProgress(label, train_settings.epochs))
    if train_settings.early_stopping_patience > 0:
        built_in.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=train_settings.early_stopping_patience,
            restore_best_weights=True))

    def run(live):
        return model.fit(train_data, validation_data=val_data, epochs=train_settings.epochs,
                         callbacks=[*built_in, *live, *callbacks], shuffle=False,
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
