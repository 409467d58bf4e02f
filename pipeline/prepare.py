"""prepare stage: split a stratified validation set off the training set and normalize.

Writes data/prepared/{train,val,test}.npz (x: float32 (N, 784), y: uint8 (N,)) and
data_card.json. Nothing leaks into training: normalization statistics come from the
training split only, copies of an image stay on one side of the validation split, and
a training image identical to a test image is dropped (the data card counts both).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline import CLASS_NAMES, NUM_CLASSES
from pipeline.core import params
from pipeline.core.atomic import write_json
from pipeline.core.errors import DataError
from pipeline.core.paths import DATA_CARD_NAME, PREPARED_DIR, RAW_DIR, SOURCE_RECORD
from pipeline.core.runner import log, run_stage
from pipeline.data import idx
from pipeline.data.duplicates import image_groups, stratified_group_split, twins_in
from pipeline.data.normalization import to_features
from pipeline.data.prepared import Split, save_split


def split_validation(images: np.ndarray, labels: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[Split, Split]:
    """A seeded split that keeps each class's share equal in train and val, with all
    copies of an image on the same side."""
    groups = image_groups(images)
    distinct = labels[np.unique(groups, return_index=True)[1]]
    counts = np.bincount(distinct, minlength=NUM_CLASSES)
    if counts.min() < 2:
        raise DataError(f"training set has only {counts.min()} distinct image(s) of class "
                        f"{CLASS_NAMES[int(counts.argmin())]}; a stratified split needs 2")
    try:
        train_idx, val_idx = stratified_group_split(labels, groups, val_fraction, seed)
    except ValueError as exc:  # e.g. fewer val samples than classes
        raise DataError(f"cannot split with data.val_fraction={val_fraction}: {exc}") from None
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def without_test_twins(images: np.ndarray, labels: np.ndarray,
                       test_images: np.ndarray) -> tuple[Split, int]:
    """The training images minus any that a test image copies exactly, and their count."""
    twins = twins_in(images, test_images)
    return (images[~twins], labels[~twins]), int(twins.sum())


def duplicate_count(images: np.ndarray) -> int:
    """Images that are exact copies of an earlier one."""
    return len(images) - len(np.unique(image_groups(images)))


def normalizer(train_images: np.ndarray, method: str) -> tuple[float, float]:
    """(offset, scale) such that x = (pixels - offset) / scale (normalization.normalize)."""
    if method == "scale":
        return 0.0, 255.0
    pixels = train_images.astype(np.float64)
    return float(pixels.mean()), float(pixels.std())


def prepare_arrays(raw_dir: Path, settings: params.PrepareParams) -> tuple[dict, dict, dict]:
    """The three normalized splits, the normalization record and the duplicates record."""
    train_images, train_labels = idx.read_split(raw_dir, "train")
    test_images, test_labels = idx.read_split(raw_dir, "test")
    (train_images, train_labels), dropped = without_test_twins(train_images, train_labels,
                                                               test_images)
    (tr_x, tr_y), (va_x, va_y) = split_validation(train_images, train_labels,
                                                  settings.val_fraction, settings.seed)
    offset, scale = normalizer(tr_x, settings.normalize)
    splits = {
        "train": (to_features(tr_x, offset, scale), tr_y),
        "val": (to_features(va_x, offset, scale), va_y),
        "test": (to_features(test_images, offset, scale), test_labels),
    }
    duplicates = {
        "train_dropped_as_copies_of_test": dropped,
        "train_copies_kept_on_one_side": duplicate_count(train_images),
        "test_copies": duplicate_count(test_images),
    }
    return splits, {"method": settings.normalize, "offset": offset, "scale": scale}, duplicates


def content_hash(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()


def data_card(splits: dict, normalization: dict, source: dict, duplicates: dict) -> dict:
    return {
        "source": source.get("source"),
        "official_split": source.get("official_split"),
        "source_note": source.get("note"),
        **({"source_package": source["package"]} if "package" in source else {}),
        **({"source_version": source["version"]} if "version" in source else {}),
        "duplicates": duplicates,
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
    path = raw_dir / SOURCE_RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def prepare(settings: params.PrepareParams, raw_dir: Path = RAW_DIR,
            out_dir: Path = PREPARED_DIR) -> dict:
    splits, normalization, duplicates = prepare_arrays(raw_dir, settings)
    card = data_card(splits, normalization, read_source_record(raw_dir), duplicates)
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
