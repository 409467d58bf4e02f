"""Classify your own pictures: `python -m pipeline.predict PATH...` (files or folders).

A tool, not a pipeline stage: it reads the models the pipeline made and writes nothing.
Each image is made to look like Fashion-MNIST (pipeline/serving/images.py), normalized as
prepare normalized the training data (from the data card), and classified; the top-k
classes are printed with their probabilities. A file that cannot be read gets one line
on stderr naming it and the reason, the others are still classified, and the exit
status is 1.

    python -m pipeline.predict photos/ shoe.jpg          # tuned model, top 3
    python -m pipeline.predict --model baseline --top-k 1 --json photos/
    python -m pipeline.predict --model models/tuned_savedmodel photos/   # the export
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from pipeline.core import registry
from pipeline.core.errors import PipelineError
from pipeline.core.paths import DATA_CARD
from pipeline.core.runner import program, quiet_tensorflow
from pipeline.data.normalization import Normalization
from pipeline.serving.images import ImageReadError, load_fashion_mnist

DEFAULT_MODEL = "tuned"
# What a folder is searched for; a file named on the command line is always tried.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BATCH_SIZE = 1024


@dataclass
class Prediction:
    path: Path
    top: list[tuple[str, float]]  # (class name, probability), most probable first


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=program("pipeline.predict"),
        description="Top-k Fashion-MNIST classes for your own PNG or JPEG images.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image files, or folders searched recursively for images")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a model registered in dvc.yaml (baseline, tuned, "
                             "tuned-savedmodel) or a path to a .keras file or SavedModel "
                             f"folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--top-k", type=int, default=3, choices=range(1, NUM_CLASSES + 1),
                        metavar=f"1..{NUM_CLASSES}", help="classes to show per image (default: 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--data-card", type=Path, default=DATA_CARD,
                        help="the prepared data's card, whose normalization a .keras model "
                             f"expects (default: {DATA_CARD})")
    return parser.parse_args(argv)


def image_files(paths: Sequence[Path]) -> tuple[list[Path], list[ImageReadError]]:
    """Files as given, folders expanded (sorted); a path that is neither is an error."""
    files, errors = [], []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(ImageReadError(f"{path}: no image files in this folder "
                                             f"({', '.join(IMAGE_SUFFIXES)})"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            errors.append(ImageReadError(f"{path}: no such file or folder"))
    return files, errors


def read_images(files: Sequence[Path]) -> tuple[list[Path], np.ndarray, list[ImageReadError]]:
    """The readable files and their 28x28 images; an error for each of the others."""
    good, images, errors = [], [], []
    for path in files:
        try:
            images.append(load_fashion_mnist(path))
            good.append(path)
        except ImageReadError as exc:
            errors.append(exc)
    return good, np.array(images, dtype=np.uint8).reshape(-1, *IMAGE_SHAPE), errors


def classifier(path: Path, data_card: Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images (N, 28, 28) -> probabilities (N, 10), for a .keras file (normalized
    here, from the data card) or a SavedModel folder (normalization built in).
    Missing inputs are reported before TensorFlow loads."""
    if not path.exists():
        raise registry.missing_artifact(path)
    if path.is_dir():
        quiet_tensorflow()
        from pipeline.serving.signature import load_savedmodel

        return load_savedmodel(path)
    normalization = Normalization.from_card(data_card)
    quiet_tensorflow()
    from pipeline.training.model import load_model

    network = load_model(path)

    def probabilities(images: np.ndarray) -> np.ndarray:
        return network.predict(normalization.features(images), batch_size=BATCH_SIZE,
                               verbose=0)

    return probabilities


def top_k(probabilities: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(CLASS_NAMES[i], float(row[i])) for i in best]
            for row, best in zip(probabilities, order)]


def as_text(prediction: Prediction) -> str:
    return f"{prediction.path}: " + ", ".join(f"{name} {p:.1%}" for name, p in prediction.top)


def as_json(model: Path, predictions: list[Prediction], errors: list[ImageReadError]) -> str:
    return json.dumps({
        "model": str(model),
        "predictions": [{"path": str(p.path),
                         "top_k": [{"class": name, "probability": round(prob, 6)}
                                   for name, prob in p.top]} for p in predictions],
        "errors": [str(error) for error in errors],
    }, indent=2)


def run(args: argparse.Namespace) -> int:
    model_path = registry.resolve(args.model)
    files, errors = image_files(args.paths)
    model = classifier(model_path, args.data_card) if files else None
    good, images, read_errors = read_images(files)
    errors += read_errors
    for error in errors:
        print(f"predict: error: {error}", file=sys.stderr, flush=True)
    predictions = []
    if good:
        tops = top_k(np.asarray(model(images), dtype=np.float64), args.top_k)
        predictions = [Prediction(path, top) for path, top in zip(good, tops)]
    if args.json:
        print(as_json(model_path, predictions, errors))
    else:
        for prediction in predictions:
            print(as_text(prediction))
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except PipelineError as exc:
        print(f"predict: error: {exc}", file=sys.stderr, flush=True)
        return 1


def cli() -> None:
    """The `fmnist-predict` command (pyproject.toml's [project.scripts])."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
