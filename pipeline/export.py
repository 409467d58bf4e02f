"""export stage: the tuned model as a TensorFlow SavedModel for serving.

Its signature takes raw uint8 images (batch, 28, 28) and applies the normalization
recorded in the data card itself (pipeline/serving/signature.py has the contract). The folder is
written aside, checked against the Keras model through both kinds of TensorFlow loader
(by object, and by the saver as TF Serving loads it), and only then renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import IMAGE_SHAPE, NUM_CLASSES
from pipeline.core import params, registry
from pipeline.core.atomic import atomic_dir
from pipeline.core.errors import DataError
from pipeline.core.paths import DATA_CARD, MODELS, SAVEDMODEL_DIR
from pipeline.core.runner import log, quiet_tensorflow, run_stage
from pipeline.data.normalization import Normalization
from pipeline.training import engine

MODEL_PATH = MODELS["tuned"]
PROBE_IMAGES = 64


def probe_images(count: int = PROBE_IMAGES) -> np.ndarray:
    """Fixed random pixels: enough to tell a wrong normalization or weights apart."""
    return np.random.default_rng(0).integers(0, 256, size=(count, *IMAGE_SHAPE), dtype=np.uint8)


def export(model_path: Path, normalization: Normalization, out_dir: Path) -> None:
    from pipeline.serving.signature import write_savedmodel
    from pipeline.training.model import load_model

    model = load_model(model_path)
    probe = probe_images()
    expected = model.predict(normalization.features(probe), verbose=0)
    with atomic_dir(out_dir) as tmp:
        write_savedmodel(model, normalization, tmp)
        for loader, served in served_probabilities(tmp, probe, out_dir).items():
            if not np.allclose(served, expected, rtol=1e-5, atol=1e-6):
                raise DataError(f"{out_dir}: the exported model, loaded by {loader}, disagrees "
                                f"with {model_path} (max difference "
                                f"{np.abs(served - expected).max():.3g})")


def served_probabilities(path: Path, probe: np.ndarray, out_dir: Path) -> dict[str, np.ndarray]:
    """The probe's probabilities by each kind of TensorFlow loader: by object, and by the
    saver as TF Serving loads a model. One can run a model the other cannot."""
    import tensorflow as tf

    from pipeline.serving.signature import load_savedmodel, session_probabilities

    served = {"tf.saved_model.load": load_savedmodel(path)(probe)}
    try:
        served["the TF1 session loader"] = session_probabilities(path, probe)
    except tf.errors.OpError as exc:
        raise DataError(f"{out_dir}: the exported model fails in the TF1 session loader, "
                        f"as TF Serving would load it ({type(exc).__name__}: "
                        f"{first_sentence(exc.message)})") from None
    return served


def first_sentence(message: str) -> str:
    """'Could not find variable x' out of TensorFlow's 'Graph execution error: ...' text."""
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line.startswith("Graph execution error")]
    return lines[0].split(". ")[0] if lines else message.strip()


def main() -> None:
    params.load("export")  # declares no params: fails early if dvc.yaml lacks the stage
    normalization = Normalization.from_card(DATA_CARD)
    if not MODEL_PATH.is_file():
        raise registry.missing_artifact(MODEL_PATH)
    engine.use(engine.EXPORT, force=True)  # a SavedModel is TensorFlow's, whatever trained it
    quiet_tensorflow()  # TensorFlow loads only after the inputs were found
    export(MODEL_PATH, normalization, SAVEDMODEL_DIR)
    log(f"export: wrote {SAVEDMODEL_DIR}/ (signature serving_default: uint8 images "
        f"(None, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}) -> probabilities (None, {NUM_CLASSES}) and "
        f"class_name; normalization {normalization.method} built in, offset "
        f"{normalization.offset:g}, scale {normalization.scale:g})")


if __name__ == "__main__":
    run_stage("export", main)
