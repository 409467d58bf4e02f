"""The training path before the JAX engine (issue 20), frozen here for bench/train_speed.py.

Keras on TensorFlow with the workarounds that path needed and the JAX one does not:
Adam as TensorFlow's one fused kernel (reaching into private Keras attributes), a
tf.data pipeline gathering batches by a seeded permutation, `cores - 1` threads for
TensorFlow's ops, op determinism and XLA off. Runs only under KERAS_BACKEND=tensorflow.
"""

from __future__ import annotations

import contextlib
import math
import os
import types

import keras
import numpy as np
import tensorflow as tf

STEPS_PER_EXECUTION = 128


def leave_a_core_to_the_input_pipeline() -> None:
    if tf.config.threading.get_intra_op_parallelism_threads():
        return
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) - 1))


def _fused_adam_step(self, gradient, variable, learning_rate):
    index = self._get_variable_index(variable)
    step = keras.ops.cast(self.iterations + 1, variable.dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=keras.ops.power(self.beta_1, step),
        beta2_power=keras.ops.power(self.beta_2, step),
        lr=keras.ops.cast(learning_rate, variable.dtype), beta1=self.beta_1,
        beta2=self.beta_2, epsilon=self.epsilon, grad=gradient)


def fused_adam(learning_rate) -> keras.optimizers.Adam:
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.update_step = types.MethodType(_fused_adam_step, optimizer)
    return optimizer


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int,
                 shuffle_seed: int | None = None) -> tf.data.Dataset:
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


def fit(model_settings, train_settings, train, val, callbacks=()) -> float:
    """Train as pipeline.training.fitting.fit did (Adam only); the final validation accuracy."""
    from pipeline.training.model import build_model, learning_rate

    leave_a_core_to_the_input_pipeline()
    keras.utils.set_random_seed(train_settings.seed)
    tf.config.experimental.enable_op_determinism()
    steps = math.ceil(len(train[0]) / train_settings.batch_size)
    model = build_model(model_settings)
    model.compile(optimizer=fused_adam(learning_rate(train_settings, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=min(STEPS_PER_EXECUTION, steps), jit_compile=False)
    val_data = make_dataset(*val, batch_size=max(1024, train_settings.batch_size))
    model.fit(make_dataset(*train, train_settings.batch_size, shuffle_seed=train_settings.seed),
              validation_data=val_data, epochs=train_settings.epochs, callbacks=list(callbacks),
              shuffle=False, verbose=0)
    return float(model.evaluate(val_data, verbose=0)[1])
