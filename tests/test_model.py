"""The model builder honours every param; training is deterministic and learns."""

import time

import keras
import numpy as np
import pytest

from pipeline.model import build_model, compile_model, renumber_shared_objects, save_model
from pipeline.params import ModelParams, TrainParams
from pipeline.training import fit


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


def test_cosine_schedule_decays_to_zero_over_all_steps():
    model = compile_model(build_model(model_params()),
                          train_params(lr_schedule="cosine", epochs=5), steps_per_epoch=10)
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-7)


def test_training_learns_and_is_deterministic(splits):
    settings = model_params(dropout=0.2, batch_norm=True)
    first = fit(settings, train_params(), splits["train"], splits["val"], verbose=False)
    second = fit(settings, train_params(), splits["train"], splits["val"], verbose=False)
    assert first.val_accuracy > 0.6  # ten classes: chance is 0.1
    assert first.val_accuracy == second.val_accuracy
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        assert np.array_equal(a, b)


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
