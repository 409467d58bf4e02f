"""The prepared-data format: one .npz per split with x (float32, N x 784) and y (uint8).

Kept apart from prepare.py so that the stages reading prepared data depend on this
small module only, not on the fetch and IDX code prepare needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import DataError
from pipeline.core.paths import PREPARED_DIR

SPLITS = ("train", "val", "test")

Split = tuple[np.ndarray, np.ndarray]


def split_path(split: str, folder: Path = PREPARED_DIR) -> Path:
    path = Path(folder) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path}: not found; run the prepare stage first")
    return path


def save_split(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, x=x, y=y)


def load_split(split: str, folder: Path = PREPARED_DIR) -> Split:
    with np.load(split_path(split, folder)) as data:
        return data["x"], data["y"]


def load_labels(split: str, folder: Path = PREPARED_DIR) -> np.ndarray:
    """Only the labels: an .npz member loads on access, so the images stay on disk."""
    with np.load(split_path(split, folder)) as data:
        return data["y"]
