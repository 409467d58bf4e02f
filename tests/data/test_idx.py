"""The IDX reader/writer: round trip and one clear error per kind of malformation."""

import gzip
import struct

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.data import idx
from tests.support.synthetic import make_images


def test_round_trip_preserves_arrays_and_is_byte_stable():
    images, labels = make_images(3, seed=0)
    assert np.array_equal(idx.decode(idx.encode(images), "x"), images)
    assert np.array_equal(idx.decode(idx.encode(labels), "y"), labels)
    assert idx.encode(images) == idx.encode(images.copy())  # gzip mtime fixed at 0


def test_header_is_the_official_layout():
    raw = gzip.decompress(idx.encode(np.zeros((2, 28, 28), np.uint8)))
    assert struct.unpack(">IIII", raw[:16]) == (0x00000803, 2, 28, 28)
    raw = gzip.decompress(idx.encode(np.zeros(5, np.uint8)))
    assert struct.unpack(">II", raw[:8]) == (0x00000801, 5)


def test_writer_refuses_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        idx.encode(np.zeros(3, np.int32))


def _gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


@pytest.mark.parametrize("data, message", [
    pytest.param(b"not gzip at all", "not a valid gzip file", id="not-gzip"),
    pytest.param(idx.encode(np.zeros((2, 28, 28), np.uint8))[:-12], "not a valid gzip file",
                 id="cut-gzip"),
    pytest.param(_gz(struct.pack(">I", 0x00000d03) + struct.pack(">III", 1, 28, 28) + bytes(784)),
                 "wrong IDX magic number 0x00000d03", id="bad-magic"),
    pytest.param(_gz(struct.pack(">I", 0x00000803) + struct.pack(">II", 1, 28)),
                 "truncated IDX header", id="short-header"),
    pytest.param(_gz(struct.pack(">IIII", 0x00000803, 2, 28, 28) + bytes(784)),
                 r"truncated IDX payload: header \(2, 28, 28\) needs 1568 bytes, file has 784",
                 id="short-payload"),
    pytest.param(_gz(struct.pack(">II", 0x00000801, 2) + bytes(3)), "oversized IDX payload",
                 id="long-payload"),
])
def test_malformed_files_name_the_file_and_problem(data, message):
    with pytest.raises(DataError, match=f"^train-images-idx3-ubyte.gz: {message}"):
        idx.decode(data, "train-images-idx3-ubyte.gz")


def _write_split(folder, images, labels):
    (folder / idx.FILES["train_images"]).write_bytes(idx.encode(images))
    (folder / idx.FILES["train_labels"]).write_bytes(idx.encode(labels))


def test_wrong_image_dimensions_are_refused(tmp_path):
    _write_split(tmp_path, np.zeros((2, 27, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: images must have shape "
                                        r"\(N, 28, 28\), got \(2, 27, 28\)"):
        idx.read_split(tmp_path, "train")


def test_label_out_of_range_is_refused(tmp_path):
    _write_split(tmp_path, np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 10 at index 1 "
                                        r"is outside 0..9"):
        idx.read_split(tmp_path, "train")


def test_count_mismatch_is_refused(tmp_path):
    _write_split(tmp_path, np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but train-labels-idx1-ubyte.gz has 2 labels"):
        idx.read_split(tmp_path, "train")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: file not found"):
        idx.read_split(tmp_path, "test")
