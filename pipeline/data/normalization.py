"""Pixels to model inputs: x = (pixels - offset) / scale, as prepare applied it.

prepare records (offset, scale) in the data card; predict and the exported SavedModel
read them from there, so a person's image is normalized exactly as the training data
was. `normalize` is plain arithmetic on float32, so the same expression serves NumPy
arrays and TensorFlow tensors alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import registry
from pipeline.core.paths import DATA_CARD


def normalize(pixels, offset: float, scale: float):
    """float32 pixels (array or tensor) -> model inputs."""
    return (pixels - np.float32(offset)) / np.float32(scale)


def to_features(images: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """uint8 images (N, 28, 28) or (N, 784) -> float32 (N, 784) model inputs."""
    return normalize(images.reshape(len(images), -1).astype(np.float32), offset, scale)


@dataclass(frozen=True)
class Normalization:
    method: str
    offset: float
    scale: float

    @classmethod
    def from_card(cls, path: str | Path = DATA_CARD) -> "Normalization":
        """The normalization prepare recorded; a missing or damaged card names the file."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise registry.missing_artifact(path) from None
        try:
            record = json.loads(text)["normalization"]
            normalization = cls(str(record["method"]), float(record["offset"]),
                                float(record["scale"]))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise registry.damaged_artifact(path, f"truncated or not JSON ({exc})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise registry.damaged_artifact(
                path, f"no valid normalization record ({exc!r})") from None
        if not np.isfinite(normalization.scale) or normalization.scale <= 0:
            raise registry.damaged_artifact(
                path, f"normalization scale must be > 0, got {normalization.scale}")
        return normalization

    def features(self, images: np.ndarray) -> np.ndarray:
        return to_features(images, self.offset, self.scale)
