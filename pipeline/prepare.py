"""prepare stage: split a stratified validation set off the training set and normalize.

Writes data/prepared/{train,val,test}.npz (x: float32 (N, 784), y: uint8 (N,)) and
data_card.json. Normalization statistics come from the training split only, so no
information from validation or test leaks into training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline import CLASS_NAMES, NUM_CLASSES, idx, params
from pipeline.atomic import write_json
from pipeline.cli import log, run_stage
from pipeline.errors import DataError
from pipeline.idx import RAW_DIR
from pipeline.normalization import DATA_CARD_NAME, to_features
from pipeline.splits import PREPARED_DIR, Split, save_split


def split_validation(images: np.ndarray, labels: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[Split, Split]:
    """A seeded split that keeps each class's share equal in train and val."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if counts.min() < 2:
        raise DataError(f"training set has only {counts.min()} image(s) of class "
                        f"{CLASS_NAMES[int(counts.argmin())]}; a stratified split needs 2")
    try:
        train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                              stratify=labels, random_state=seed)
    except ValueError as exc:  # e.g. fewer val samples than classes
        raise DataError(f"cannot split with data.val_fraction={val_fraction}: {exc}") from None
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def normalizer(train_images: np.ndarray, method: str) -> tuple[float, float]:
    """(offset, scale) such that x = (pixels - offset) / scale (normalization.normalize)."""
    if method == "scale":
        return 0.0, 255.0
    pixels = train_images.astype(np.float64)
    return float(pixels.mean()), float(pixels.std())


def prepare_arrays(raw_dir: Path, settings: params.PrepareParams) -> tuple[dict, dict]:
    """The three normalized splits and the normalization record."""
    train_images, train_labels = idx.read_split(raw_dir, "train")
    test_images, test_labels = idx.read_split(raw_dir, "test")
    (tr_x, tr_y), (va_x, va_y) = split_validation(train_images, train_labels,
                                                  settings.val_fraction, settings.seed)
    offset, scale = normalizer(tr_x, settings.normalize)
    splits = {
        "train": (to_features(tr_x, offset, scale), tr_y),
        "val": (to_features(va_x, offset, scale), va_y),
        "test": (to_features(test_images, offset, scale), test_labels),
    }
    return splits, {"method": settings.normalize, "offset": offset, "scale": scale}


def content_hash(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()


def data_card(splits: dict, normalization: dict, source: dict) -> dict:
    return {
        "source": source.get("source"),
        "official_split": source.get("official_split"),
        "source_note": source.get("note"),
        "class_names": list(CLASS_NAMES),
        "counts": {name: len(y) for name, (_, y) in splits.items()},
        "counts_per_class": {
            name: dict(zip(CLASS_NAMES, np.bincount(y, minlength=NUM_CLASSES).tolist()))
            for name, (_, y) in splits.items()
        },
        "normalization": normalization,
        "sha256": {name: content_hash(x, y) for name, (x, y) in splits.items()},
    }


def read_source_record(raw_dir: Path) -> dict:
    path = raw_dir / "source.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def prepare(settings: params.PrepareParams, raw_dir: Path = RAW_DIR,
            out_dir: Path = PREPARED_DIR) -> dict:
    splits, normalization = prepare_arrays(raw_dir, settings)
    card = data_card(splits, normalization, read_source_record(raw_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in splits.items():
        save_split(out_dir / f"{name}.npz", x, y)
    write_json(out_dir / DATA_CARD_NAME, card)
    return card


def main() -> None:
    settings = params.PrepareParams.from_params(params.load("prepare"))
    card = prepare(settings)
    counts = ", ".join(f"{name} {n}" for name, n in card["counts"].items())
    log(f"prepare: wrote {PREPARED_DIR}/ ({counts}; normalize={settings.normalize})")


if __name__ == "__main__":
    run_stage("prepare", main)
