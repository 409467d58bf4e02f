"""prepare: stratified seeded validation split, normalization from train only, data card."""

import json

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.core.params import FetchParams, PrepareParams
from pipeline.data.prepared import load_split
from pipeline.fetch import fetch_raw
from pipeline.prepare import prepare


@pytest.fixture
def raw_dir(idx_dir, tmp_path):
    fetch_raw(FetchParams("local", str(idx_dir)), tmp_path / "raw")
    return tmp_path / "raw"


def run(raw_dir, out, **overrides):
    settings = dict(val_fraction=0.25, seed=3, normalize="scale") | overrides
    return prepare(PrepareParams(**settings), raw_dir, out)


def test_split_is_stratified_and_counts_add_up(raw_dir, tmp_path):
    card = run(raw_dir, tmp_path / "p")
    assert card["counts"] == {"train": 300, "val": 100, "test": 100}
    assert set(card["counts_per_class"]["val"].values()) == {10}
    assert card["counts_per_class"]["train"]["Ankle boot"] == 30
    x, y = load_split("train", tmp_path / "p")
    assert x.shape == (300, 784) and x.dtype == np.float32 and y.dtype == np.uint8
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_same_seed_same_split_other_seed_other_split(raw_dir, tmp_path):
    first = run(raw_dir, tmp_path / "a")["sha256"]
    again = run(raw_dir, tmp_path / "b")["sha256"]
    other = run(raw_dir, tmp_path / "c", seed=4)["sha256"]
    assert first == again
    assert first["val"] != other["val"] and first["test"] == other["test"]


def test_standardize_uses_training_split_statistics_only(raw_dir, tmp_path):
    card = run(raw_dir, tmp_path / "p", normalize="standardize")
    x_train, _ = load_split("train", tmp_path / "p")
    x_test, _ = load_split("test", tmp_path / "p")
    assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std()) - 1) < 1e-3
    assert abs(float(x_test.mean())) > 1e-4  # test was scaled with train's numbers, not its own
    assert card["normalization"]["method"] == "standardize"


def test_data_card_records_the_source(raw_dir, tmp_path):
    run(raw_dir, tmp_path / "p")
    card = json.loads((tmp_path / "p" / "data_card.json").read_text())
    assert card["source"] == "local" and card["official_split"] is False
    assert card["class_names"][9] == "Ankle boot"


def test_a_val_fraction_too_small_for_every_class_is_refused(raw_dir, tmp_path):
    with pytest.raises(DataError, match="cannot split with data.val_fraction=0.01"):
        run(raw_dir, tmp_path / "p", val_fraction=0.01)
