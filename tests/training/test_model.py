"""The model builder honours every param; training is deterministic and learns."""

import time

import keras
import numpy as np
import pytest

from pipeline.training.model import (OPTIMIZERS, build_model, compile_model, renumber_shared_objects,
                            save_model)
from pipeline.core import params
from pipeline.core.params import ModelParams, TrainParams
from pipeline.training.fitting import fit, make_dataset, seed_everything


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


def test_each_epoch_is_a_new_seeded_permutation_of_every_sample():
    x, y = np.arange(30, dtype=np.float32).reshape(10, 3), np.arange(10)

    def epochs(seed):
        seed_everything(1)
        data = make_dataset(x, y, batch_size=4, shuffle_seed=seed)
        return [[batch[1].numpy().tolist() for batch in data] for _ in range(3)]

    first = epochs(5)
    assert [[len(batch) for batch in epoch] for epoch in first] == [[4, 4, 2]] * 3
    assert all(sorted(sum(epoch, [])) == list(range(10)) for epoch in first)
    assert len({str(epoch) for epoch in first}) == 3  # reshuffled every epoch
    assert epochs(5) == first and epochs(6) != first
    images, labels = next(iter(make_dataset(x, y, batch_size=4, shuffle_seed=5)))
    assert np.array_equal(images.numpy(), x[labels.numpy()])  # pairs stay together
    assert [b[1].numpy().tolist() for b in make_dataset(x, y, 4)] == \
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # unshuffled: in order


def test_fused_adam_matches_keras_adam():
    """The fused kernel computes Keras's formula: the same weights up to rounding."""
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 20), dtype=np.float32), rng.integers(0, 10, 256)
    weights = []
    for optimizer in (keras.optimizers.Adam(0.01), OPTIMIZERS["adam"](0.01)):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, "relu"),
                                  keras.layers.Dense(10, "softmax")])
        model.compile(optimizer, "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    fused = OPTIMIZERS["adam"](0.01)
    assert fused.update_step.__func__ is not keras.optimizers.Adam.update_step
    assert type(fused) is keras.optimizers.Adam  # saves and loads as plain Adam
    for keras_weights, fused_weights in zip(*weights, strict=True):
        np.testing.assert_allclose(fused_weights, keras_weights, atol=1e-4)


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
