"""Build and compile the feedforward network from typed params."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras

from pipeline import NUM_CLASSES
from pipeline.core import registry
from pipeline.core.atomic import atomic_path
from pipeline.core.errors import DataError
from pipeline.core.params import ModelParams, TrainParams

INPUT_DIM = 28 * 28
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


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
        layers.append(keras.layers.Activation(settings.activation,
                                              name=f"{settings.activation}_{i}"))
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
    """`steps_per_execution`: Keras's loop and callbacks run once per that many batches,
    the same maths with less Python per step (see bench/train_speed.py)."""
    model.compile(
        optimizer=OPTIMIZERS[settings.optimizer](learning_rate=learning_rate(settings,
                                                                             steps_per_epoch)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save atomically (a killed run never leaves a half-written .keras file) and
    reproducibly: the same weights give the same bytes, so the same hash in dvc.lock."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        make_reproducible(tmp)


def load_model(path: str | Path, shown: str | Path | None = None,
               remedy: str | None = None) -> keras.Model:
    """The one reader of .keras files (evaluate, export, predict, tune's best model).

    A missing, truncated, damaged or foreign file stops its reader with one line naming
    it (`shown`, default the path) and what replaces it (`remedy`, default the command
    that rebuilds it, from dvc.yaml). Keras alone would call a truncated file
    "not found", and load a model of another shape only to fail later.
    """
    path = Path(path)
    shown = path if shown is None else shown

    def damaged(problem: str) -> DataError:
        if remedy is None:
            return registry.damaged_artifact(shown, problem)
        return DataError(f"{shown}: {problem}; {remedy}")

    if not path.is_file():
        raise registry.missing_artifact(shown) if remedy is None else damaged("not found")
    try:
        with zipfile.ZipFile(path) as archive:
            names, corrupt = archive.namelist(), archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise damaged(f"truncated or not a .keras file ({exc})") from None
    if corrupt is not None:
        raise damaged(f"damaged: {corrupt} inside fails its CRC check")
    if "config.json" not in names:
        raise damaged("a zip archive but not a Keras model (no config.json inside)")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a file it cannot rebuild
        reason = " ".join(str(exc).split())[:200]
        raise damaged(f"not a loadable Keras model ({type(exc).__name__}: {reason})") \
            from None
    expected = ((None, INPUT_DIM), (None, NUM_CLASSES))
    found = (tuple(model.input_shape), tuple(model.output_shape))
    if found != expected:
        raise damaged(f"a model from {found[0]} to {found[1]}, not a Fashion-MNIST "
                      f"classifier from {expected[0]} to {expected[1]}")
    return model


def make_reproducible(path: Path) -> None:
    """Remove what differs between two saves of the same model: the save time (metadata
    and zip entry dates) and the memory addresses Keras uses as shared-object ids.
    Left in, they give DVC a new hash for identical weights and rerun every later stage."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                data = json.dumps(renumber_shared_objects(json.loads(data))).encode()
            archive.writestr(zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH), data,
                             compress_type=info.compress_type)


def renumber_shared_objects(config, numbers: dict | None = None):
    """Replace each distinct shared_object_id (an id() of this process) by 1, 2, ... in
    order of appearance; equal ids stay equal, so sharing survives loading."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, list):
        return [renumber_shared_objects(item, numbers) for item in config]
    if not isinstance(config, dict):
        return config
    renumbered = {}
    for key, value in config.items():
        if key == "shared_object_id":
            renumbered[key] = numbers.setdefault(value, len(numbers) + 1)
        else:
            renumbered[key] = renumber_shared_objects(value, numbers)
    return renumbered
