"""predict and export on a small trained model: the same answers as evaluate and Keras.

One module-scoped project folder holds prepared synthetic garments (standardized, so the
data card's normalization is not the identity), a trained model and dvc.yaml, the way a
checkout of this project looks after `dvc repro`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import CLASS_NAMES
from pipeline.core.params import ModelParams, PrepareParams, TrainParams
from pipeline.core.paths import DATA_CARD
from pipeline.data import idx
from tests.support import ROOT
from tests.support.synthetic import make_garment_images, write_idx_dataset

TEST_PER_CLASS = 30  # 300 test images


@pytest.fixture(scope="module")
def tuned_project(tmp_path_factory):
    """A project folder after prepare and tune (tuned.keras), as the current directory."""
    from pipeline.data.prepared import load_split
    from pipeline.prepare import prepare
    from pipeline.training.fitting import fit
    from pipeline.training.model import save_model

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
    from pipeline.data.prepared import load_split
    from pipeline.evaluate import predict, predictions_table

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
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + len(top) * 5e-7  # each is rounded to 6 decimals
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


@pytest.fixture(scope="module")
def keras_test_predictions(tuned_project):
    """The raw uint8 test images and the Keras model's probabilities for them, computed
    on the prepared split as evaluate feeds it."""
    import keras

    from pipeline.data.prepared import load_split

    raw_images, _ = idx.read_split(tuned_project / "data" / "raw", "test")
    x_test, _ = load_split("test")
    expected = keras.models.load_model("models/tuned.keras", compile=False).predict(
        x_test, verbose=0)
    return raw_images, expected


def assert_served_as_keras(class_names, probabilities, expected) -> None:
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert [name.decode() for name in class_names] == \
        [CLASS_NAMES[i] for i in expected.argmax(axis=1)]
    assert len(set(class_names)) > 1  # a trained model, not one answer for all


def test_savedmodel_matches_the_keras_model_on_the_test_images(savedmodel,
                                                               keras_test_predictions):
    import tensorflow as tf

    raw_images, expected = keras_test_predictions
    serve = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    outputs = serve(images=tf.constant(raw_images, dtype=tf.uint8))
    assert_served_as_keras(outputs["class_name"].numpy(), outputs["probabilities"].numpy(),
                           expected)


def test_saved_model_cli_run_gives_the_keras_models_classes(savedmodel, keras_test_predictions,
                                                            tmp_path):
    """TensorFlow's own command restores the variables by the saver, as TF Serving does."""
    raw_images, expected = keras_test_predictions
    np.save(tmp_path / "images.npy", raw_images)
    cli = Path(sys.executable).parent / "saved_model_cli"  # installed with TensorFlow
    result = subprocess.run(
        [str(cli), "run", "--dir", str(savedmodel), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'images.npy'}",
         "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    assert "Result for output key class_name:" in result.stdout
    assert_served_as_keras(np.load(tmp_path / "out" / "class_name.npy", allow_pickle=True),
                           np.load(tmp_path / "out" / "probabilities.npy"), expected)


TF1_SESSION_CLIENT = """
import sys
import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
savedmodel, images, out = sys.argv[1:]
with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], savedmodel)
    signature = meta_graph.signature_def["serving_default"]
    outputs = session.run({key: info.name for key, info in signature.outputs.items()},
                          {signature.inputs["images"].name: np.load(images)})
np.savez(out, **outputs)
"""


def test_the_tf1_session_loader_gives_the_keras_models_classes(savedmodel,
                                                               keras_test_predictions,
                                                               tmp_path):
    """In its own process: TF1 graph mode must not leak into the other tests."""
    raw_images, expected = keras_test_predictions
    np.save(tmp_path / "images.npy", raw_images)
    result = subprocess.run(
        [sys.executable, "-c", TF1_SESSION_CLIENT, str(savedmodel),
         str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    outputs = np.load(tmp_path / "out.npz", allow_pickle=True)
    assert_served_as_keras(outputs["class_name"], outputs["probabilities"], expected)


TFSMLAYER_CLIENT = """
import sys
import numpy as np
from pipeline.training import engine
engine.use(engine.EXPORT, force=True)  # TFSMLayer runs on the TensorFlow backend only
import keras
layer = keras.layers.TFSMLayer(sys.argv[1], call_endpoint="serving_default")
outputs = layer(np.load(sys.argv[2]))
np.savez(sys.argv[3], class_name=outputs["class_name"].numpy(),
         probabilities=outputs["probabilities"].numpy())
"""


def run_client(code: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """A client in its own process: its own Keras backend and TensorFlow mode."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"))


def test_keras_tfsmlayer_gives_the_keras_models_classes(savedmodel, keras_test_predictions,
                                                        tmp_path):
    raw_images, expected = keras_test_predictions
    np.save(tmp_path / "images.npy", raw_images)
    result = run_client(TFSMLAYER_CLIENT, savedmodel, tmp_path / "images.npy",
                        tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    outputs = np.load(tmp_path / "out.npz", allow_pickle=True)
    assert_served_as_keras(outputs["class_name"], outputs["probabilities"], expected)


# The export before issue 23 kept the Keras model as the module's attribute:
# tf.saved_model.load ran it, TF Serving's way of loading did not.
TF2_ONLY_EXPORT = """
import sys
from pathlib import Path
from pipeline.training import engine
engine.use(engine.EXPORT, force=True)
import tensorflow as tf
from pipeline.core.errors import DataError
from pipeline.core.paths import DATA_CARD
from pipeline.data.normalization import Normalization, normalize
from pipeline.export import export
from pipeline.serving import signature

def write_tracking_the_keras_model(model, normalization, path):
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda images: {signature.PROBABILITIES: module.model(normalize(
            tf.reshape(tf.cast(images, tf.float32), (-1, signature.PIXELS)),
            normalization.offset, normalization.scale), training=False)},
        input_signature=[tf.TensorSpec((None, 28, 28), tf.uint8, name="images")])
    tf.saved_model.save(module, str(path), signatures={signature.SIGNATURE: module.serve})

signature.write_savedmodel = write_tracking_the_keras_model
try:
    export(Path("models/tuned.keras"), Normalization.from_card(DATA_CARD), Path(sys.argv[1]))
except DataError as error:
    print(error)
    sys.exit(3)
"""


def test_export_refuses_a_savedmodel_that_only_tf2s_loader_runs(tuned_project, tmp_path):
    out_dir = tmp_path / "served"
    result = run_client(TF2_ONLY_EXPORT, out_dir, cwd=tuned_project)
    assert result.returncode == 3, result.stderr
    prefix = (f"{out_dir}: the exported model fails in the TF1 session loader, as TF Serving "
              "would load it (FailedPreconditionError: Could not find variable ")
    assert re.fullmatch(re.escape(prefix) + r"(dense_1|softmax)/(kernel|bias)\)",
                        result.stdout.strip()), result.stdout  # whichever read ran first
    assert not out_dir.exists() and list(tmp_path.iterdir()) == []


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


def test_blank_pictures_are_named_and_skipped_and_the_rest_predicted(tuned_project, test_pngs,
                                                                    capsys):
    """The issue's case: a blank 300x300 picture was called "Sandal 94.6%"."""
    from pipeline.predict import main

    folder = tuned_project / "blank"
    folder.mkdir()
    Image.new("L", (300, 300), 255).save(folder / "white.png")
    Image.new("RGB", (300, 300), (0, 0, 0)).save(folder / "black.png")
    faint = np.random.default_rng(0).integers(245, 256, size=(300, 300), dtype=np.uint8)
    Image.fromarray(faint).save(folder / "faint.png")  # paper texture, no object on it
    shutil.copy(test_pngs[0] / "0000.png", folder / "good.png")
    assert main([str(folder)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"predict: error: {folder / 'black.png'}: blank picture (every pixel has grey level 0): "
        "nothing to classify",
        f"predict: error: {folder / 'faint.png'}: nothing stands out from the background (every "
        "pixel within 13 grey levels of the border's 250): nothing to classify",
        f"predict: error: {folder / 'white.png'}: blank picture (every pixel has grey level "
        "255): nothing to classify",
    ]
    lines = captured.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{folder / 'good.png'}: ")


def test_a_cut_model_is_one_line_with_the_reason(tuned_project, test_pngs, capsys):
    """The issue's case: tuned.keras cut to 5,000 bytes; Keras alone said "File not found"."""
    from pipeline.predict import main

    model = tuned_project / "models" / "tuned.keras"
    data = model.read_bytes()
    try:
        model.write_bytes(data[:5000])
        assert main([str(test_pngs[0] / "0000.png")]) == 1
    finally:
        model.write_bytes(data)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        "predict: error: models/tuned.keras: truncated or not a .keras file (File is not a zip "
        "file); `dvc repro tune` rebuilds it, or `dvc pull --force models/tuned.keras` fetches "
        "it again from the project's DVC remote"]


@pytest.mark.parametrize("text, problem", [
    ('{"normalization": {"meth', "truncated or not JSON (Unterminated string starting at: "
                                 "line 1 column 20 (char 19))"),
    ('{"counts": {}}', "no valid normalization record (KeyError('normalization'))"),
    ('{"normalization": {"method": "scale", "offset": 0, "scale": 0}}',
     "normalization scale must be > 0, got 0.0"),
], ids=["cut", "no-record", "zero-scale"])
def test_a_damaged_data_card_is_one_line_naming_it(tuned_project, test_pngs, capsys, text,
                                                   problem):
    from pipeline.predict import main

    card = Path("data/prepared/damaged_card.json")
    card.write_text(text)
    try:
        assert main(["--data-card", str(card), str(test_pngs[0] / "0000.png")]) == 1
    finally:
        card.unlink()
    assert capsys.readouterr().err.splitlines() == [
        f"predict: error: {card}: {problem}; `dvc repro prepare` rebuilds it, or "
        f"`dvc pull --force {card}` fetches it again from the project's DVC remote"]


def test_predict_imports_no_stage_module():
    from tests.stages.test_stage_contract import STAGES, imported_closure

    stage_modules = {f"pipeline.{stage}" for stage in STAGES}
    assert not imported_closure("pipeline.predict") & stage_modules
