"""The exported SavedModel's contract: raw uint8 images in, class probabilities out.

The export stage writes it; predict and any TensorFlow client (TF Serving included)
call it. The normalization prepare applied is built into the signature, so a client
sends pixels as they are and needs neither the data card nor this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import CLASS_NAMES, IMAGE_SHAPE
from pipeline.core.errors import DataError
from pipeline.data.normalization import Normalization, normalize

SIGNATURE = "serving_default"
INPUT = "images"  # uint8, (batch, 28, 28), light garment on black as in Fashion-MNIST
PROBABILITIES = "probabilities"  # float32, (batch, 10), in the order of CLASS_NAMES
CLASS_NAME = "class_name"  # string, (batch,): the most probable class
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]


def write_savedmodel(model, normalization: Normalization, path: str | Path) -> None:
    """tf.saved_model.save of a module whose `serve` function is the serving_default
    signature. (Keras' model.export orders the variables differently from run to run;
    this way the same model gives the same bytes, so DVC sees an unchanged output.)"""
    import tensorflow as tf

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="fashion_mnist")
            self.model = model
            self.class_names = tf.constant(CLASS_NAMES)

        @tf.function(input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8,
                                                    name=INPUT)])
        def serve(self, images):
            pixels = tf.reshape(tf.cast(images, tf.float32), (-1, PIXELS))
            probabilities = self.model(
                normalize(pixels, normalization.offset, normalization.scale), training=False)
            return {PROBABILITIES: probabilities,
                    CLASS_NAME: tf.gather(self.class_names, tf.argmax(probabilities, axis=1))}

    module = Serving()
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve})
    drop_fingerprint_uuid(Path(path))


def drop_fingerprint_uuid(path: Path) -> None:
    """fingerprint.pb carries a random uuid besides its content hashes; keep the hashes."""
    from tensorflow.core.protobuf import fingerprint_pb2

    file = path / "fingerprint.pb"
    if file.is_file():
        fingerprint = fingerprint_pb2.FingerprintDef.FromString(file.read_bytes())
        fingerprint.ClearField("uuid")
        file.write_bytes(fingerprint.SerializeToString(deterministic=True))


def load_savedmodel(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images (N, 28, 28) -> probabilities (N, 10), through the serving signature."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures[SIGNATURE]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a SavedModel with a '{SIGNATURE}' signature "
                        f"({type(exc).__name__})") from None

    def probabilities(images: np.ndarray) -> np.ndarray:
        outputs = signature(**{INPUT: tf.constant(images, dtype=tf.uint8)})
        return outputs[PROBABILITIES].numpy()

    probabilities.loaded = loaded  # the signature is valid only while its object lives
    return probabilities
