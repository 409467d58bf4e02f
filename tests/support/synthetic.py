"""Small, learnable Fashion-MNIST look-alikes in the real IDX format, for fast tests.

Each class is a fixed random 28x28 template plus pixel noise, so a small network
separates the classes well above chance within a few epochs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline import NUM_CLASSES
from pipeline.data import idx
from pipeline.data.prepared import save_split


def make_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    templates = np.random.default_rng(1234).integers(0, 256, size=(NUM_CLASSES, 28, 28))
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), n_per_class)
    rng.shuffle(labels)
    noise = rng.normal(0, 60, size=(len(labels), 28, 28))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def make_garment_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """make_images with black columns left and right, as a Fashion-MNIST garment has: an
    object on a dark background, full height, for code that looks at the background."""
    images, labels = make_images(n_per_class, seed)
    images[:, :, :5] = 0
    images[:, :, -5:] = 0
    return images, labels


def write_idx_dataset(folder: Path, n_train_per_class: int = 40, n_test_per_class: int = 10,
                      with_md5sums: bool = True, make=make_images) -> Path:
    """The four IDX .gz files (and an MD5SUMS manifest) in `folder`, images from `make`."""
    arrays = {}
    arrays["train_images"], arrays["train_labels"] = make(n_train_per_class, seed=1)
    arrays["test_images"], arrays["test_labels"] = make(n_test_per_class, seed=2)
    return write_idx_files(folder, arrays, with_md5sums)


def write_idx_files(folder: Path, arrays: dict[str, np.ndarray],
                    with_md5sums: bool = True) -> Path:
    """`arrays` (keys as idx.FILES) as the four IDX .gz files, with an MD5SUMS manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, name in idx.FILES.items():
        data = idx.encode(arrays[key])
        (folder / name).write_bytes(data)
        lines.append(f"{hashlib.md5(data).hexdigest()}  {name}")
    if with_md5sums:
        (folder / "MD5SUMS").write_text("\n".join(lines) + "\n")
    return folder


def make_splits(n_train_per_class: int = 40, n_val_per_class: int = 10,
                n_test_per_class: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Prepared-style splits: x float32 (N, 784) in [0, 1], y uint8."""
    splits = {}
    for seed, (name, n) in enumerate((("train", n_train_per_class), ("val", n_val_per_class),
                                      ("test", n_test_per_class)), start=10):
        images, labels = make_images(n, seed)
        splits[name] = ((images.reshape(len(images), -1) / 255.0).astype(np.float32), labels)
    return splits


def write_prepared(folder: Path, splits: dict | None = None, **sizes) -> Path:
    """data/prepared-style .npz files in `folder`: `splits`, or make_splits(**sizes)."""
    for name, (x, y) in (splits or make_splits(**sizes)).items():
        save_split(Path(folder) / f"{name}.npz", x, y)
    return Path(folder)
