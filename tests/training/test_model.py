"""The model builder honours every param; training is deterministic and learns."""

import os
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

from pipeline.core import params, paths
from pipeline.core.errors import DataError
from pipeline.core.params import ModelParams, TrainParams
from pipeline.training.fitting import ShuffledFullBatches, even_batches, fit
from pipeline.training.model import (
    OPTIMIZERS,
    build_model,
    compile_model,
    load_model,
    renumber_shared_objects,
    save_model,
)
from tests.conftest import new_project, set_params
from tests.support import ROOT
from tests.support.synthetic import write_prepared


def model_params(**overrides):
    return ModelParams(**(dict(hidden_units=(32, 16), activation="relu", dropout=0.0,
                               batch_norm=False, l2=0.0) | overrides))


def train_params(**overrides):
    return TrainParams(**(dict(optimizer="adam", learning_rate=0.01, lr_schedule="constant",
                               batch_size=32, epochs=4, early_stopping_patience=0, seed=1)
                          | overrides))


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize("units", [(64,), (48, 24), (40, 30, 20)])
def test_one_dense_layer_per_hidden_width_plus_softmax(units):
    model = build_model(model_params(hidden_units=units))
    dense = layers_of(model, keras.layers.Dense)
    assert [layer.units for layer in dense] == [*units, 10]
    assert dense[-1].activation.__name__ == "softmax"
    assert model.output_shape == (None, 10) and model.input_shape == (None, 784)


def test_dropout_and_batch_norm_appear_only_when_asked():
    plain = build_model(model_params())
    assert not layers_of(plain, keras.layers.Dropout)
    assert not layers_of(plain, keras.layers.BatchNormalization)
    regular = build_model(model_params(dropout=0.3, batch_norm=True))
    assert [d.rate for d in layers_of(regular, keras.layers.Dropout)] == [0.3, 0.3]
    assert len(layers_of(regular, keras.layers.BatchNormalization)) == 2


def test_activation_and_l2_are_applied():
    model = build_model(model_params(activation="tanh", l2=1e-4))
    activations = layers_of(model, keras.layers.Activation)
    assert [a.activation.__name__ for a in activations] == ["tanh", "tanh"]
    hidden = layers_of(model, keras.layers.Dense)[0]
    assert float(hidden.kernel_regularizer.l2) == pytest.approx(1e-4)


@pytest.mark.parametrize("name, cls", [("adam", keras.optimizers.Adam),
                                       ("sgd", keras.optimizers.SGD),
                                       ("rmsprop", keras.optimizers.RMSprop)])
def test_optimizer_and_learning_rate_come_from_params(name, cls):
    model = compile_model(build_model(model_params()),
                          train_params(optimizer=name, learning_rate=0.0025), 10)
    assert isinstance(model.optimizer, cls)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0025)


def learning_rate_at(model, step):
    """The optimizer's learning rate once `step` batches have run."""
    model.optimizer.iterations.assign(step)
    return float(model.optimizer.learning_rate)


def test_cosine_schedule_decays_to_zero_over_all_steps():
    """5 epochs x 10 steps: half the rate at step 25, zero at 50. Keras clamps at
    decay_steps, so only the midpoint tells 50 steps from 5."""
    model = compile_model(build_model(model_params()),
                          train_params(lr_schedule="cosine", epochs=5), steps_per_epoch=10)
    assert learning_rate_at(model, 0) == pytest.approx(0.01)
    assert learning_rate_at(model, 25) == pytest.approx(0.005, rel=1e-5)
    assert learning_rate_at(model, 50) == pytest.approx(0.0, abs=1e-7)


def test_every_optimizer_params_accepts_is_built():
    """params.py validates names without loading Keras; model.py builds them: one list."""
    assert set(OPTIMIZERS) == set(params.OPTIMIZERS)
    for name in params.OPTIMIZERS:
        model = compile_model(build_model(model_params()), train_params(optimizer=name), 10)
        assert type(model.optimizer).__name__.lower() == name


def test_training_learns_and_is_deterministic(splits):
    settings = model_params(dropout=0.2, batch_norm=True)
    first = fit(settings, train_params(), splits["train"], splits["val"], verbose=False)
    second = fit(settings, train_params(), splits["train"], splits["val"], verbose=False)
    assert first.val_accuracy > 0.6  # ten classes: chance is 0.1
    assert first.val_accuracy == second.val_accuracy
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("rows, at_most, size", [
    (6000, 1024, 1000),  # the default validation split: six equal batches, not 5 x 1024 + 880
    (6000, 6000, 6000), (6000, 8192, 6000), (10, 3, 3), (1, 1024, 1), (7, 7, 7)])
def test_validation_batches_are_as_even_as_the_cap_allows(rows, at_most, size):
    assert even_batches(rows, at_most) == size
    assert -(-rows // size) == -(-rows // at_most)  # no more batches than the cap gives


def test_training_runs_on_the_training_engine():
    """The tests train as the stages do: on JAX, where XLA compiles the train step."""
    model = compile_model(build_model(model_params()), train_params(), 10)
    assert keras.backend.backend() == "jax" and model.jit_compile is True


def test_each_epoch_draws_full_batches_in_a_new_seeded_order():
    """Every batch has the same shape (one compiled train step), no row repeats within an
    epoch, the few rows left over change from epoch to epoch, and the seed fixes it all."""
    x, y = np.arange(1000, dtype=np.float32).reshape(-1, 1), np.arange(1000) % 10
    batches = ShuffledFullBatches((x, y), batch_size=64, seed=3)
    again = ShuffledFullBatches((x, y), batch_size=64, seed=3)
    epochs, left_over = [], []
    for _ in range(3):
        rows = [batches[i][0].ravel() for i in range(len(batches))]
        assert [len(r) for r in rows] == [64] * 15
        assert np.array_equal(np.concatenate(rows), again.order[:960])
        seen = np.concatenate(rows).astype(int)
        assert len(set(seen)) == 960
        epochs.append(tuple(seen))
        left_over.append(frozenset(range(1000)) - set(seen))
        batches.on_epoch_end()
        again.on_epoch_end()
    assert len(set(epochs)) == 3 and len(set(left_over)) == 3
    assert np.array_equal(ShuffledFullBatches((x, y), 64, seed=4)[0][0],
                          ShuffledFullBatches((x, y), 64, seed=4)[0][0])
    assert not np.array_equal(ShuffledFullBatches((x, y), 64, seed=4)[0][0],
                              ShuffledFullBatches((x, y), 64, seed=5)[0][0])


def test_fit_compiles_one_train_step_when_the_batch_does_not_divide_the_data(splits, caplog):
    """400 rows at batch 64 leave 16: Keras's own loop would compile a second train step
    for them (jax logs each compilation, a cached one too)."""
    import jax

    assert len(splits["train"][0]) % 64
    with jax.log_compiles(True), caplog.at_level("DEBUG"):
        fit(model_params(hidden_units=(24,)), train_params(batch_size=64, epochs=2),
            splits["train"], splits["val"], verbose=False)
    compiled = [r.getMessage() for r in caplog.records
                if "Finished XLA compilation of jit(train_step)" in r.getMessage()]
    assert len(compiled) == 1, compiled


def test_a_training_set_smaller_than_a_batch_is_one_batch():
    x, y = np.zeros((5, 2), np.float32), np.zeros(5)
    batches = ShuffledFullBatches((x, y), batch_size=128, seed=0)
    assert len(batches) == 1 and len(batches[0][0]) == 5


def test_two_fresh_processes_train_byte_identical_models(tmp_path, splits):
    """The train stage twice, each in its own process: the same .keras bytes."""
    models = []
    for run in ("first", "second"):
        folder = new_project(tmp_path / run)
        set_params(folder, {"model.hidden_units": [32], "train.epochs": 2})
        write_prepared(folder / paths.PREPARED_DIR,
                       {name: splits[name] for name in ("train", "val")})
        done = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=folder,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "train epoch 2/2:" in done.stdout
        models.append((folder / paths.MODELS["baseline"]).read_bytes())
    assert models[0] == models[1]


def test_extra_callbacks_see_every_epochs_validation_accuracy(splits):
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["val_accuracy"])

    result = fit(model_params(), train_params(epochs=3), splits["train"], splits["val"],
                 verbose=False, callbacks=[Spy()])
    assert seen == result.history["val_accuracy"] and len(seen) == 3


def test_early_stopping_keeps_the_best_epoch(splits):
    result = fit(model_params(), train_params(epochs=12, early_stopping_patience=2,
                                              learning_rate=0.05),
                 splits["train"], splits["val"], verbose=False)
    assert result.val_accuracy == pytest.approx(max(result.history["val_accuracy"]), abs=1e-6)


def test_progress_is_one_line_per_epoch_and_curves_go_to_dvclive(splits, tmp_path, capsys):
    fit(model_params(), train_params(epochs=3), splits["train"], splits["val"],
        live_dir=tmp_path / "live", label="train")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"train epoch {i}/3" for i in (1, 2, 3)]
    assert "left" in lines[0]
    curve = (tmp_path / "live" / "plots" / "metrics" / "eval" / "accuracy.tsv").read_text()
    assert curve.splitlines()[0].split("\t") == ["step", "accuracy"]
    assert len(curve.strip().splitlines()) == 1 + 3
    assert not list(tmp_path.glob(".live.*"))  # the temp folder was renamed into place


def test_saved_model_is_byte_reproducible_and_loads(tmp_path):
    model = build_model(model_params(batch_norm=True))
    save_model(model, tmp_path / "a.keras")
    time.sleep(1.1)  # Keras would stamp a different save time
    save_model(model, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.models.load_model(tmp_path / "a.keras")
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_shared_object_ids_are_renumbered_consistently():
    config = {"a": {"shared_object_id": 140657824684688}, "b": [
        {"shared_object_id": 139745564845584}, {"shared_object_id": 140657824684688}]}
    assert renumber_shared_objects(config) == {"a": {"shared_object_id": 1}, "b": [
        {"shared_object_id": 2}, {"shared_object_id": 1}]}


# --- reading a .keras file: every reader goes through load_model ---------------------

BASELINE = "models/baseline.keras"
REBUILD = ("; `dvc repro train` rebuilds it, or `dvc pull --force models/baseline.keras` "
           "fetches it again from the project's DVC remote")


@pytest.fixture
def saved(project, monkeypatch):
    """models/baseline.keras in a project (the current folder): the file and its bytes."""
    monkeypatch.chdir(project)
    path = project / BASELINE
    save_model(build_model(model_params(hidden_units=(8,))), path)
    return path, path.read_bytes()


def zip_with(path, entries: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)


def other_shape_model(path) -> None:
    keras.Sequential([keras.Input(shape=(28, 28)), keras.layers.Flatten(),
                      keras.layers.Dense(3)]).save(path)


def test_load_model_gives_the_saved_weights(saved):
    path, _ = saved
    loaded = load_model(BASELINE)
    assert loaded.input_shape == (None, 784) and loaded.output_shape == (None, 10)
    original = keras.models.load_model(path)
    for a, b in zip(original.get_weights(), loaded.get_weights(), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("damage, problem", [
    (lambda path, data: path.write_bytes(data[:5000]),
     "truncated or not a .keras file (File is not a zip file)"),
    (lambda path, data: path.write_text("weights\n"),
     "truncated or not a .keras file (File is not a zip file)"),
    (lambda path, data: zip_with(path, {"notes.txt": "hello"}),
     "a zip archive but not a Keras model (no config.json inside)"),
    (lambda path, data: zip_with(path, {"config.json": "{"}),
     "not a loadable Keras model (JSONDecodeError: Expecting property name enclosed in double "
     "quotes: line 1 column 2 (char 1))"),
    (lambda path, data: other_shape_model(path),
     "a model from (None, 28, 28) to (None, 3), not a Fashion-MNIST classifier from "
     "(None, 784) to (None, 10)"),
], ids=["cut", "text", "zip", "config", "other-shape"])
def test_a_damaged_or_foreign_model_is_one_line_naming_it(saved, damage, problem):
    damage(*saved)
    with pytest.raises(DataError) as caught:
        load_model(BASELINE)
    assert str(caught.value) == f"{BASELINE}: {problem}{REBUILD}"


def test_a_flipped_byte_in_the_weights_is_found(saved):
    path, data = saved
    with zipfile.ZipFile(path) as archive:
        weights = archive.getinfo("model.weights.h5")
    start = weights.header_offset + 30 + len(weights.filename) + len(weights.extra)  # zip layout
    damaged = bytearray(data)
    damaged[start + weights.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError) as caught:
        load_model(BASELINE)
    assert str(caught.value) == (f"{BASELINE}: damaged: model.weights.h5 inside fails its CRC "
                                 f"check{REBUILD}")


def test_a_caller_can_name_the_file_and_the_remedy(saved):
    path, data = saved
    path.write_bytes(data[:5000])
    with pytest.raises(DataError) as caught:
        load_model(path, shown="trial 3's model", remedy="delete the study")
    assert str(caught.value) == ("trial 3's model: truncated or not a .keras file (File is not "
                                 "a zip file); delete the study")
