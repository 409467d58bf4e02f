"""Prepared splits are checked when read: a truncated or foreign .npz stops its reader with
one line naming the file, what is wrong and the command that rebuilds it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.core.paths import PREPARED_DIR
from pipeline.data.prepared import load_labels, load_split
from tests.support import ROOT
from tests.support.synthetic import write_prepared

TRAIN = PREPARED_DIR / "train.npz"
REBUILD = ("; `dvc repro prepare` rebuilds it, or `dvc pull --force data/prepared/train.npz` "
           "fetches it again from the project's DVC remote")


@pytest.fixture
def prepared(project, splits, monkeypatch):
    """A project with prepared train and val splits, as the current folder."""
    monkeypatch.chdir(project)
    write_prepared(project / PREPARED_DIR, {name: splits[name] for name in ("train", "val")})
    return project


def test_a_prepared_split_reads_back_as_written(prepared, splits):
    x, y = load_split("train")
    assert np.array_equal(x, splits["train"][0]) and np.array_equal(y, splits["train"][1])
    assert np.array_equal(load_labels("val"), splits["val"][1])


def test_a_missing_split_names_the_command_that_makes_it(prepared):
    with pytest.raises(DataError) as caught:
        load_split("test")
    assert str(caught.value) == (
        "data/prepared/test.npz: not found; `dvc repro prepare` produces it, or "
        "`dvc pull data/prepared/test.npz` fetches it from the project's DVC remote")


def save(*array, **arrays) -> None:
    """train.npz replaced by an .npz of `arrays`, or by the one .npy `array`."""
    with open(TRAIN, "wb") as handle:
        if array:
            np.save(handle, *array)
        else:
            np.savez(handle, **arrays)


@pytest.mark.parametrize("damage, problem", [
    (lambda s: TRAIN.write_bytes(TRAIN.read_bytes()[:1000]),
     "truncated, damaged or not an .npz file (File is not a zip file)"),
    (lambda s: TRAIN.write_bytes(b""), "truncated, damaged or not an .npz file "
                                       "(No data left in file)"),
    (lambda s: TRAIN.write_text("x,y\n0,1\n"),
     "truncated, damaged or not an .npz file (not a zip archive)"),
    (lambda s: save(s["train"][0]), "a single .npy array, not an .npz archive"),
    (lambda s: save(images=s["train"][0], labels=s["train"][1]),
     "holds the arrays images, labels, not a prepared split's x and y"),
    (lambda s: save(x=s["train"][0].astype(np.float64), y=s["train"][1]),
     "x is float64 (400, 784), expected float32 (N, 784)"),
    (lambda s: save(x=s["train"][0].reshape(-1, 28, 28), y=s["train"][1]),
     "x is float32 (400, 28, 28), expected float32 (N, 784)"),
    (lambda s: save(x=s["train"][0], y=s["train"][1].astype(np.int64)),
     "y is int64 (400,), expected uint8 (N,)"),
    (lambda s: save(x=s["train"][0], y=s["train"][1][:-1]), "400 images but 399 labels"),
    (lambda s: save(x=s["train"][0], y=s["train"][1] + 10), "label 19 out of range 0..9"),
], ids=["cut", "empty", "csv", "npy", "foreign", "dtype", "shape", "labels-dtype",
        "counts", "label-range"])
def test_a_damaged_or_foreign_split_is_one_line_naming_it(prepared, splits, damage, problem):
    damage(splits)
    with pytest.raises(DataError) as caught:
        load_split("train")
    assert str(caught.value) == f"data/prepared/train.npz: {problem}{REBUILD}"


def test_a_flipped_byte_is_found_by_the_zip_checksum(prepared):
    data = bytearray(TRAIN.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside x's pixels
    TRAIN.write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        load_split("train")
    assert str(caught.value) == ("data/prepared/train.npz: truncated, damaged or not an .npz "
                                 f"file (Bad CRC-32 for file 'x.npy'){REBUILD}")


def test_reading_the_labels_alone_checks_them_too(prepared, splits):
    save(x=splits["train"][0], y=splits["train"][1] + 10)
    with pytest.raises(DataError, match="^data/prepared/train.npz: label 19 out of range"):
        load_labels("train")


def test_the_train_stage_on_a_cut_split_stops_with_one_line(prepared):
    """The issue's case: train.npz cut to 1,000 bytes, then `python -m pipeline.train`."""
    TRAIN.write_bytes(TRAIN.read_bytes()[:1000])
    result = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=prepared,
                            capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                 "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 1
    assert result.stderr == ("train: error: data/prepared/train.npz: truncated, damaged or not "
                             f"an .npz file (File is not a zip file){REBUILD}\n")
    assert not (prepared / "models").exists() and not (prepared / "reports").exists()
