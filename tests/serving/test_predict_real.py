"""predict on real Fashion-MNIST test images, as files a person would have.

Needs the real data, so it fetches the official files through the debian source (marked
`network`; CI reaches Debian's archive, so this runs there) and trains the baseline network
for a few epochs: enough to show that predict's preprocessing keeps what the network learned.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline import CLASS_NAMES
from pipeline.core.params import FetchParams, ModelParams, PrepareParams, TrainParams
from pipeline.data import idx

pytestmark = pytest.mark.network

IMAGES = 1000
EPOCHS = 10
PHOTO_SIZE = (200, 200)


@pytest.fixture(scope="module")
def tuned_project(tmp_path_factory):
    """Real raw and prepared data, and a quickly trained model, as the current directory."""
    from pipeline.data.prepared import load_split
    from pipeline.fetch import fetch_raw
    from pipeline.prepare import prepare
    from pipeline.training.fitting import fit
    from pipeline.training.model import save_model

    folder = tmp_path_factory.mktemp("real")
    raw, prepared = folder / "data" / "raw", folder / "data" / "prepared"
    fetch_raw(FetchParams("debian", ""), raw)
    prepare(PrepareParams(val_fraction=0.1, seed=42, normalize="scale"), raw, prepared)
    result = fit(ModelParams((256, 128), "relu", 0.2, True, 0.0),
                 TrainParams("adam", 0.001, "constant", 128, EPOCHS, 0, 7),
                 load_split("train", prepared), load_split("val", prepared), verbose=False)
    save_model(result.model, folder / "model.keras")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


def write_pngs(folder, images, transform) -> None:
    folder.mkdir()
    for i, image in enumerate(images):
        transform(Image.fromarray(image)).save(folder / f"{i:04d}.png")


def predicted_classes(capsys, folder) -> np.ndarray:
    from pipeline.predict import main

    assert main(["--json", "--top-k", "1", "--model", "model.keras", str(folder)]) == 0
    output = json.loads(capsys.readouterr().out)
    return np.array([p["top_k"][0]["class"] for p in output["predictions"]])


def test_test_images_as_pngs_get_evaluates_classes(tuned_project, capsys):
    from pipeline.data.prepared import load_split
    from pipeline.evaluate import predict, predictions_table

    images, _ = idx.read_split("data/raw", "test")
    write_pngs(tuned_project / "pngs", images[:IMAGES], lambda image: image)
    x, y = load_split("test")
    probabilities = predict(tuned_project / "model.keras", x[:IMAGES], 2048)
    expected = predictions_table(y[:IMAGES], probabilities, CLASS_NAMES)["predicted"]
    assert list(predicted_classes(capsys, tuned_project / "pngs")) == list(expected)


def test_product_photo_versions_keep_at_least_85_percent_accuracy(tuned_project, capsys):
    """Dark garment on white, 200x200 RGB: predict must trim, fit, invert and normalize."""
    images, labels = idx.read_split("data/raw", "test")
    write_pngs(tuned_project / "photos", 255 - images[:IMAGES],
               lambda image: image.resize(PHOTO_SIZE).convert("RGB"))
    predicted = predicted_classes(capsys, tuned_project / "photos")
    accuracy = float(np.mean(predicted == np.array(CLASS_NAMES)[labels[:IMAGES]]))
    print(f"photo-style accuracy on {IMAGES} real test images: {accuracy:.3f}")
    assert accuracy >= 0.85
