"""predict and export on a small trained model: the same answers as evaluate and Keras.

One module-scoped project folder holds prepared synthetic garments (standardized, so the
data card's normalization is not the identity), a trained model and dvc.yaml, the way a
checkout of this project looks after `dvc repro`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import CLASS_NAMES
from pipeline.data import idx
from pipeline.core.paths import DATA_CARD
from pipeline.core.params import ModelParams, PrepareParams, TrainParams
from tests.support.synthetic import make_garment_images, write_idx_dataset

ROOT = Path(__file__).resolve().parents[2]
TEST_PER_CLASS = 30  # 300 test images


@pytest.fixture(scope="module")
def tuned_project(tmp_path_factory):
    """A project folder after prepare and tune (tuned.keras), as the current directory."""
    from pipeline.training.model import save_model
    from pipeline.prepare import prepare
    from pipeline.data.prepared import load_split
    from pipeline.training.fitting import fit

    folder = tmp_path_factory.mktemp("project")
    raw = write_idx_dataset(folder / "data" / "raw", 40, TEST_PER_CLASS, make=make_garment_images)
    prepare(PrepareParams(val_fraction=0.2, seed=0, normalize="standardize"), raw,
            folder / DATA_CARD.parent)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, folder / name)
    prepared = folder / DATA_CARD.parent
    result = fit(ModelParams((32,), "relu", 0.0, False, 0.0),
                 TrainParams("adam", 0.01, "constant", 32, 4, 0, 7),
                 load_split("train", prepared), load_split("val", prepared), verbose=False)
    save_model(result.model, folder / "models" / "tuned.keras")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def test_pngs(tuned_project):
    """The raw test images written out as PNG files, with their labels."""
    images, labels = idx.read_split(tuned_project / "data" / "raw", "test")
    folder = tuned_project / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return folder, labels


def predict_json(capsys, *args) -> tuple[int, dict]:
    from pipeline.predict import main

    status = main(["--json", *map(str, args)])
    return status, json.loads(capsys.readouterr().out)


def evaluate_classes(model_path: Path) -> list[str]:
    """What the evaluate stage predicts for the prepared test split."""
    from pipeline.evaluate import predict, predictions_table
    from pipeline.data.prepared import load_split

    x, y = load_split("test")
    return list(predictions_table(y, predict(model_path, x, 2048), CLASS_NAMES)["predicted"])


def test_predict_on_test_pngs_gives_evaluates_classes(tuned_project, test_pngs, capsys):
    status, output = predict_json(capsys, "--top-k", "1", test_pngs[0])
    assert status == 0 and output["errors"] == [] and output["model"] == "models/tuned.keras"
    predicted = [p["top_k"][0]["class"] for p in output["predictions"]]
    assert [Path(p["path"]).name for p in output["predictions"]] == \
        [f"{i:04d}.png" for i in range(len(test_pngs[1]))]  # input order, sorted folder
    assert predicted == evaluate_classes(Path("models/tuned.keras"))
    accuracy = np.mean(np.array(predicted) == np.array(CLASS_NAMES)[test_pngs[1]])
    assert accuracy > 0.5  # a trained model, not a constant answer


def test_top_k_lists_the_most_probable_classes_first(tuned_project, test_pngs, capsys):
    status, output = predict_json(capsys, "--top-k", "4", test_pngs[0] / "0000.png")
    top = output["predictions"][0]["top_k"]
    probabilities = [entry["probability"] for entry in top]
    assert status == 0 and len(top) == 4
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0
    assert len({entry["class"] for entry in top}) == 4


def test_text_output_is_one_line_per_image(tuned_project, test_pngs, capsys):
    from pipeline.predict import main

    paths = [test_pngs[0] / "0001.png", test_pngs[0] / "0002.png"]
    assert main([str(p) for p in paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in paths]
    assert all(line.count("%") == 3 for line in lines)


# --- export: a SavedModel that takes raw uint8 images --------------------------------


def run_module(module: str, *args, cwd) -> subprocess.CompletedProcess:
    """`python -m <module>` in a fresh process, as a user (or dvc repro) runs it."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.fixture(scope="module")
def savedmodel(tuned_project):
    """models/tuned_savedmodel, written by the export stage's command."""
    result = run_module("pipeline.export", cwd=tuned_project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("export: wrote models/tuned_savedmodel/ (signature "
                                    "serving_default: uint8 images (None, 28, 28) -> ")
    return tuned_project / "models" / "tuned_savedmodel"


def test_savedmodel_matches_the_keras_model_on_the_test_images(tuned_project, savedmodel):
    import keras
    import tensorflow as tf

    from pipeline.data.prepared import load_split

    raw_images, _ = idx.read_split(tuned_project / "data" / "raw", "test")
    x_test, _ = load_split("test")  # what evaluate feeds the Keras model
    expected = keras.models.load_model("models/tuned.keras", compile=False).predict(
        x_test, verbose=0)
    serve = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    outputs = serve(images=tf.constant(raw_images, dtype=tf.uint8))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    names = [name.decode() for name in outputs["class_name"].numpy()]
    assert names == [CLASS_NAMES[i] for i in expected.argmax(axis=1)]


def test_export_is_byte_reproducible(tuned_project, savedmodel):
    """A rerun gives the same bytes, so DVC sees an unchanged output (contract 3)."""
    first = {p.relative_to(savedmodel): p.read_bytes() for p in savedmodel.rglob("*")
             if p.is_file()}
    assert run_module("pipeline.export", cwd=tuned_project).returncode == 0
    again = {p.relative_to(savedmodel): p.read_bytes() for p in savedmodel.rglob("*")
             if p.is_file()}
    assert sorted(again) == sorted(first) and Path("saved_model.pb") in first
    assert [name for name in first if first[name] != again[name]] == []


def test_predict_through_the_savedmodel_gives_the_same_classes(tuned_project, savedmodel,
                                                               test_pngs, capsys):
    _, keras_output = predict_json(capsys, test_pngs[0])
    status, served_output = predict_json(capsys, "--model", "tuned-savedmodel", test_pngs[0])
    assert status == 0 and served_output["model"] == "models/tuned_savedmodel"
    for a, b in zip(keras_output["predictions"], served_output["predictions"]):
        assert [e["class"] for e in a["top_k"]] == [e["class"] for e in b["top_k"]]
        np.testing.assert_allclose([e["probability"] for e in a["top_k"]],
                                   [e["probability"] for e in b["top_k"]], atol=2e-6)


# --- errors: one line each, the other files still predicted --------------------------


def test_bad_files_get_one_line_each_and_the_rest_are_predicted(tuned_project, test_pngs):
    bad = tuned_project / "bad"
    bad.mkdir()
    good = test_pngs[0] / "0000.png"
    shutil.copy(good, bad / "good.png")
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("not a picture\n")
    (bad / "cut.png").write_bytes(good.read_bytes()[:60])
    (bad / "ignored.txt").write_text("a folder's non-image files are skipped\n")
    result = run_module("pipeline.predict", bad, tuned_project / "missing.png", cwd=tuned_project)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"predict: error: {tuned_project / 'missing.png'}: no such file or folder",
        f"predict: error: {bad / 'cut.png'}: truncated or damaged image data: "
        "image file is truncated",
        f"predict: error: {bad / 'empty.png'}: empty file",
        f"predict: error: {bad / 'notes.jpg'}: not an image (Pillow cannot identify its format)",
    ]
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{bad / 'good.png'}: ")


def test_a_missing_model_names_the_command_that_makes_it(tuned_project, test_pngs, capsys):
    from pipeline.predict import main

    assert main(["--model", "baseline", str(test_pngs[0] / "0000.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        "predict: error: models/baseline.keras: not found; `dvc repro train` produces it, "
        "or `dvc pull models/baseline.keras` fetches it from the project's DVC remote"]


def test_a_missing_data_card_names_the_command_that_makes_it(tuned_project, test_pngs, capsys):
    from pipeline.predict import main

    assert main(["--data-card", "data/prepared/gone.json", str(test_pngs[0] / "0000.png")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "predict: error: data/prepared/gone.json: not found; `dvc repro prepare` produces it, "
        "or `dvc pull data/prepared/gone.json` fetches it from the project's DVC remote"]


def test_predict_imports_no_stage_module():
    from tests.stages.test_stage_contract import STAGES, imported_closure

    stage_modules = {f"pipeline.{stage}" for stage in STAGES}
    assert not imported_closure("pipeline.predict") & stage_modules
