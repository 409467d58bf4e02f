"""The IDX file format of (Fashion-)MNIST, gzipped, with strict validation.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
then one big-endian uint32 per dimension, then the uint8 payload. Labels are 1-D
(magic 0x00000801), images 3-D (magic 0x00000803).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from pipeline import IMAGE_SHAPE, NUM_CLASSES
from pipeline.core.errors import DataError

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def encode(array: np.ndarray) -> bytes:
    """Gzipped IDX bytes of a uint8 array; mtime 0 so equal arrays give equal bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writer supports uint8 only, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes(), compresslevel=6, mtime=0)


def decompress(data: bytes, name: str) -> bytes:
    """The IDX bytes inside a .gz file; a damaged gzip raises DataError naming `name`."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: not a valid gzip file ({exc})") from None


def decode(data: bytes, name: str) -> np.ndarray:
    """Parse gzipped IDX bytes; every malformation raises DataError naming `name`."""
    raw = decompress(data, name)
    if len(raw) < 4:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes)")
    zero1, zero2, dtype, ndim = struct.unpack(">BBBB", raw[:4])
    if zero1 or zero2 or dtype != UBYTE or ndim not in (1, 3):
        magic = int.from_bytes(raw[:4], "big")
        raise DataError(f"{name}: wrong IDX magic number 0x{magic:08x} "
                        f"(expected 0x{LABELS_MAGIC:08x} or 0x{IMAGES_MAGIC:08x})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(raw) - header_len
    if payload != expected:
        kind = "truncated" if payload < expected else "oversized"
        raise DataError(f"{name}: {kind} IDX payload: header {shape} needs {expected} bytes, "
                        f"file has {payload}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def check_images(images: np.ndarray, name: str) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{name}: images must have shape (N, 28, 28), got {images.shape}")
    return images


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.ndim != 1:
        raise DataError(f"{name}: labels must be 1-D, got shape {labels.shape}")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(f"{name}: label {int(labels[bad[0]])} at index {int(bad[0])} "
                        f"is outside 0..{NUM_CLASSES - 1}")
    return labels


def decode_split(images_bytes: bytes, labels_bytes: bytes, images_name: str,
                 labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split, each checked and their counts matched."""
    images = check_images(decode(images_bytes, images_name), images_name)
    labels = check_labels(decode(labels_bytes, labels_name), labels_name)
    if len(images) != len(labels):
        raise DataError(f"{images_name}: {len(images)} images but {Path(labels_name).name} "
                        f"has {len(labels)} labels")
    return images, labels


def read_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of 'train' or 'test' from a folder holding the four files."""
    folder = Path(folder)
    paths = [folder / FILES[f"{split}_images"], folder / FILES[f"{split}_labels"]]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: file not found")
    return decode_split(paths[0].read_bytes(), paths[1].read_bytes(), str(paths[0]),
                        str(paths[1]))


def validate_files(files: dict[str, bytes]) -> None:
    """Check that the four files (name -> bytes) decode into a consistent dataset."""
    for split in ("train", "test"):
        images_name, labels_name = FILES[f"{split}_images"], FILES[f"{split}_labels"]
        decode_split(files[images_name], files[labels_name], images_name, labels_name)
