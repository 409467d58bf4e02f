"""Build and compile the feedforward network from typed params."""

from __future__ import annotations

from pathlib import Path

import keras

from pipeline import NUM_CLASSES
from pipeline.atomic import atomic_path
from pipeline.params import ModelParams, TrainParams

INPUT_DIM = 28 * 28
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9),
}


def build_model(settings: ModelParams, name: str = "ffnn") -> keras.Model:
    """Dense -> [BatchNorm] -> activation -> [Dropout] per hidden layer, softmax on top.

    With batch norm the dense layer drops its bias, which the normalization would cancel.
    """
    regularizer = keras.regularizers.L2(settings.l2) if settings.l2 > 0 else None
    layers: list[keras.layers.Layer] = [keras.Input(shape=(INPUT_DIM,), name="pixels")]
    for i, units in enumerate(settings.hidden_units, 1):
        layers.append(keras.layers.Dense(units, use_bias=not settings.batch_norm,
                                         kernel_regularizer=regularizer, name=f"dense_{i}"))
        if settings.batch_norm:
            layers.append(keras.layers.BatchNormalization(name=f"batch_norm_{i}"))
        layers.append(keras.layers.Activation(settings.activation, name=f"{settings.activation}_{i}"))
        if settings.dropout > 0:
            layers.append(keras.layers.Dropout(settings.dropout, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="softmax"))
    return keras.Sequential(layers, name=name)


def learning_rate(settings: TrainParams, steps_per_epoch: int):
    if settings.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            settings.learning_rate, decay_steps=max(1, settings.epochs * steps_per_epoch))
    return settings.learning_rate


def compile_model(model: keras.Model, settings: TrainParams, steps_per_epoch: int,
                  steps_per_execution: int = 1) -> keras.Model:
    """`steps_per_execution` runs that many batches per call into TensorFlow: same maths,
    far less Python overhead per step (see bench/train_speed.py)."""
    model.compile(
        optimizer=OPTIMIZERS[settings.optimizer](learning_rate=learning_rate(settings,
                                                                             steps_per_epoch)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=False,  # XLA was slower for these small layers on 2 CPU cores
    )
    return model


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save atomically: a killed run never leaves a half-written .keras file."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
