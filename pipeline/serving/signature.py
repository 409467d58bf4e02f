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
    signature and whose variables are the model's own tf.Variables, in layer order.

    The Keras model stays out of the module (the function reaches it by closure): saved
    as an attribute, each Keras 3 variable becomes two graph variables, the one the
    checkpoint restores and the one the function reads, so a loader that restores by the
    saver (saved_model_cli, the TF1 session loader, TF Serving) runs on variables nothing
    restored. Keras' model.export saves every weight twice and orders them differently
    from run to run; this way the same model gives the same bytes, so DVC sees an
    unchanged output."""
    import tensorflow as tf

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="fashion_mnist")
            self.weights = [weight.value for weight in model.weights]
            self.class_names = tf.constant(CLASS_NAMES)

        @tf.function(input_signature=[tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8,
                                                    name=INPUT)])
        def serve(self, images):
            pixels = tf.reshape(tf.cast(images, tf.float32), (-1, PIXELS))
            probabilities = model(
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


def session_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) -> probabilities (N, 10), through TF1's session loader.

    It restores the variables by the SavedModel's saver, as TF Serving and
    saved_model_cli do; tf.saved_model.load binds them by object instead, so a model can
    pass load_savedmodel and still fail here."""
    import tensorflow as tf

    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the loader's deprecation notice, meant for new TF2 code
    try:
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, [tf.saved_model.SERVING], str(path))
            signature = meta_graph.signature_def[SIGNATURE]
            return session.run(signature.outputs[PROBABILITIES].name,
                               {signature.inputs[INPUT].name: images})
    finally:
        logger.setLevel(level)
