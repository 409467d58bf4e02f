"""The prepared-data format: one .npz per split with x (float32, N x 784) and y (uint8).

Kept apart from prepare.py so that the stages reading prepared data depend on this
small module only, not on the fetch and IDX code prepare needs. Every read checks the
format, so a truncated or foreign file stops its reader with one line naming it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pipeline import IMAGE_SHAPE, NUM_CLASSES
from pipeline.core import registry
from pipeline.core.atomic import atomic_path
from pipeline.core.paths import PREPARED_DIR

SPLITS = ("train", "val", "test")
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# Each array of a split: its dtype and its shape (None: the number of images).
FORMAT = {"x": (np.dtype(np.float32), (None, PIXELS)), "y": (np.dtype(np.uint8), (None,))}

Split = tuple[np.ndarray, np.ndarray]


def split_path(split: str, folder: Path = PREPARED_DIR) -> Path:
    path = Path(folder) / f"{split}.npz"
    if not path.is_file():
        raise registry.missing_artifact(path)
    return path


def save_split(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, x=x, y=y)


def shape_text(shape: tuple) -> str:
    """A shape as Python prints it, N for the number of images: (N, 784), (N,)."""
    return str(tuple("N" if n is None else n for n in shape)).replace("'", "")


def read_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of a split file, each checked against FORMAT."""
    try:
        data = np.load(path)  # a file that is no zip archive is taken for a pickle: refused
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise registry.damaged_artifact(path, "a single .npy array, not an .npz archive")
        with data:
            if sorted(data.files) != sorted(FORMAT):
                raise registry.damaged_artifact(
                    path, f"holds the arrays {', '.join(sorted(data.files)) or 'none'}, not a "
                          f"prepared split's {' and '.join(FORMAT)}")
            arrays = {name: data[name] for name in names}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = "not a zip archive" if "pickle" in str(exc) else " ".join(str(exc).split())
        raise registry.damaged_artifact(
            path, f"truncated, damaged or not an .npz file ({reason[:120]})") from None
    for name, array in arrays.items():
        dtype, shape = FORMAT[name]
        if array.dtype != dtype or len(array.shape) != len(shape) or any(
                want not in (None, n) for n, want in zip(array.shape, shape)):
            raise registry.damaged_artifact(
                path, f"{name} is {array.dtype} {shape_text(array.shape)}, expected {dtype} "
                      f"{shape_text(shape)}")
    if {"x", "y"} <= arrays.keys() and len(arrays["x"]) != len(arrays["y"]):
        raise registry.damaged_artifact(
            path, f"{len(arrays['x'])} images but {len(arrays['y'])} labels")
    labels = arrays.get("y")
    if labels is not None and len(labels) and labels.max() >= NUM_CLASSES:
        raise registry.damaged_artifact(
            path, f"label {labels.max()} out of range 0..{NUM_CLASSES - 1}")
    return arrays


def load_split(split: str, folder: Path = PREPARED_DIR) -> Split:
    arrays = read_arrays(split_path(split, folder), ("x", "y"))
    return arrays["x"], arrays["y"]


def load_labels(split: str, folder: Path = PREPARED_DIR) -> np.ndarray:
    """Only the labels: an .npz member loads on access, so the images stay on disk."""
    return read_arrays(split_path(split, folder), ("y",))["y"]
