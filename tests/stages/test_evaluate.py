"""evaluate: metrics equal scikit-learn's, reports use class names, the stage end to end."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from pipeline import CLASS_NAMES, NUM_CLASSES, evaluate
from pipeline.core import params, paths
from pipeline.core.errors import DataError, ParamsError
from pipeline.core.params import EvaluateParams
from tests.conftest import set_params
from tests.support.synthetic import write_prepared


def known_predictions():
    """12 test images with hand-made probabilities: 8 right (acc 2/3); of the 4 wrong,
    2 have the true class second (top-2 = 10/12); class 9 is never predicted."""
    y_true = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 6, 0])
    y_pred = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 7, 0, 2])
    second = np.array([1, 0, 0, 0, 0, 0, 0, 0, 8, 9, 3, 1])  # true class 2nd for 8 and 9
    probabilities = np.full((len(y_true), NUM_CLASSES), 0.02)
    probabilities[np.arange(len(y_true)), y_pred] = 0.7
    probabilities[np.arange(len(y_true)), second] = 0.14
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return y_true, probabilities


def test_summary_equals_sklearn_on_known_predictions():
    y_true, probabilities = known_predictions()
    y_pred = probabilities.argmax(axis=1)
    summary = evaluate.metrics_for(y_true, probabilities, CLASS_NAMES, top_k=2).summary

    assert summary["test_accuracy"] == pytest.approx(8 / 12)
    assert summary["top_2_accuracy"] == pytest.approx(10 / 12)
    expected_loss = -np.mean(np.log(probabilities[np.arange(len(y_true)), y_true]))
    assert summary["test_loss"] == pytest.approx(expected_loss)
    assert summary["test_accuracy"] == metrics.accuracy_score(y_true, y_pred)
    assert summary["macro_f1"] == pytest.approx(metrics.f1_score(
        y_true, y_pred, labels=range(NUM_CLASSES), average="macro", zero_division=0))
    assert summary["test_loss"] == pytest.approx(
        metrics.log_loss(y_true, probabilities, labels=range(NUM_CLASSES)))
    assert set(summary) == {"test_accuracy", "test_loss", "macro_f1", "top_2_accuracy"}


def test_top_k_follows_the_param():
    y_true, probabilities = known_predictions()
    summary = evaluate.metrics_for(y_true, probabilities, CLASS_NAMES, top_k=1).summary
    assert summary["top_1_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_per_class_table_equals_classification_report():
    y_true, probabilities = known_predictions()
    table = evaluate.metrics_for(y_true, probabilities, CLASS_NAMES, top_k=2).per_class
    report = metrics.classification_report(
        y_true, probabilities.argmax(axis=1), labels=range(NUM_CLASSES),
        target_names=CLASS_NAMES, output_dict=True, zero_division=0)

    assert list(table["class"]) == list(CLASS_NAMES)
    for row in table.itertuples(index=False):
        expected = report[row[0]]
        assert (row.precision, row.recall, row.f1, row.support) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"],
             expected["support"]))
    assert table.set_index("class").loc["Ankle boot", "precision"] == 0  # never predicted


def test_a_class_absent_from_the_test_set_keeps_its_row_and_its_zero():
    """No Sandal (5) in the labels nor the predictions: every table still has 10 classes,
    and macro F1 averages over all 10 (a class the model never meets scores 0)."""
    y_true, probabilities = known_predictions()
    present = y_true != 5
    y_true, probabilities = y_true[present], probabilities[present]
    probabilities[:, 5] = 0.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    result = evaluate.metrics_for(y_true, probabilities, CLASS_NAMES, top_k=2)

    assert list(result.per_class["class"]) == list(CLASS_NAMES)
    sandal = result.per_class.set_index("class").loc["Sandal"]
    assert (sandal["support"], sandal["f1"]) == (0, 0)
    assert result.confusion.shape == (NUM_CLASSES, NUM_CLASSES)
    assert result.confusion.loc["Sandal"].sum() == 0 == result.confusion["Sandal"].sum()
    y_pred = probabilities.argmax(axis=1)
    assert result.summary["macro_f1"] == pytest.approx(metrics.f1_score(
        y_true, y_pred, labels=range(NUM_CLASSES), average="macro", zero_division=0))
    assert result.summary["macro_f1"] < metrics.f1_score(y_true, y_pred, average="macro")


def test_confusion_counts_sum_to_test_size_with_class_names():
    y_true, probabilities = known_predictions()
    confusion = evaluate.metrics_for(y_true, probabilities, CLASS_NAMES, top_k=2).confusion

    assert confusion.to_numpy().sum() == len(y_true)
    assert list(confusion.index) == list(CLASS_NAMES) == list(confusion.columns)
    assert confusion.loc["Shirt", "T-shirt/top"] == 1  # row: actual, column: predicted
    assert np.trace(confusion.to_numpy()) == 8


def test_predictions_table_names_classes_and_confidence():
    y_true, probabilities = known_predictions()
    table = evaluate.predictions_table(y_true, probabilities, CLASS_NAMES)

    assert list(table.columns) == ["index", "actual", "predicted", "confidence", "correct"]
    assert table.loc[10, ["actual", "predicted"]].tolist() == ["Shirt", "T-shirt/top"]
    assert table["confidence"].to_numpy() == pytest.approx(probabilities.max(axis=1))
    assert table["correct"].sum() == 8


def test_gain_is_tuned_minus_baseline():
    document = evaluate.metrics_document({
        "baseline": {"test_accuracy": 0.80, "macro_f1": 0.70},
        "tuned": {"test_accuracy": 0.85, "macro_f1": 0.72},
    })
    assert document["gain"] == pytest.approx({"test_accuracy": 0.05, "macro_f1": 0.02})


# --- the stage end to end, on tiny untrained models ----------------------------------


def tiny_model(seed: int):
    import keras

    from pipeline.core.params import ModelParams
    from pipeline.training.model import build_model

    keras.utils.set_random_seed(seed)
    return build_model(ModelParams(hidden_units=(8,), activation="relu", dropout=0.0,
                                   batch_norm=False, l2=0.0))


SETTINGS = EvaluateParams(batch_size=64, top_k=2)


@pytest.fixture
def workspace(project, splits):
    """A project with the test split and two tiny saved models."""
    from pipeline.training.model import save_model

    write_prepared(project / paths.PREPARED_DIR, {"test": splits["test"]})
    for seed, path in enumerate(paths.MODELS.values()):
        save_model(tiny_model(seed), project / path)
    return project


def test_stage_writes_metrics_and_reports(workspace, splits):
    evaluate.evaluate(SETTINGS, workspace)

    x, y = splits["test"]
    document = json.loads((workspace / paths.METRICS).read_text())
    assert set(document) == {"baseline", "tuned", "gain", "significance"}
    import keras

    for model in ("baseline", "tuned"):
        saved = keras.models.load_model(workspace / paths.MODELS[model])
        probabilities = saved.predict(x, verbose=0)
        assert document[model]["test_accuracy"] == pytest.approx(
            metrics.accuracy_score(y, probabilities.argmax(axis=1)))
        confusion = pd.read_csv(workspace / paths.eval_file(model, paths.CONFUSION_FILE),
                                index_col=0)
        assert confusion.to_numpy().sum() == len(y)
        assert list(confusion.columns) == list(CLASS_NAMES)
        predictions = pd.read_csv(workspace / paths.eval_file(model, paths.PREDICTIONS_FILE))
        assert len(predictions) == len(y)
        assert set(predictions["actual"]) <= set(CLASS_NAMES)
        per_class = pd.read_csv(workspace / paths.eval_file(model, paths.PER_CLASS_FILE))
        assert len(per_class) == NUM_CLASSES
    assert document["gain"]["macro_f1"] == pytest.approx(
        document["tuned"]["macro_f1"] - document["baseline"]["macro_f1"])
    from pipeline.reporting import significance

    predictions = [significance.read_predictions(workspace / paths.eval_file(
        model, paths.PREDICTIONS_FILE)) for model in ("baseline", "tuned")]
    test = document["significance"]
    assert test == significance.compare(*predictions)
    correct = [p["correct"].to_numpy() for p in predictions]
    assert test["tuned_only_right"] == int((correct[1] & ~correct[0]).sum())
    assert test["accuracy_gain"] == pytest.approx(document["gain"]["test_accuracy"])
    change = pd.read_csv(workspace / paths.CLASS_CHANGE)
    assert list(change["class"]) == list(CLASS_NAMES)
    assert change["net"].sum() == test["tuned_only_right"] - test["baseline_only_right"]
    import tensorflow

    record = json.loads((workspace / paths.PLATFORM).read_text())  # beside metrics.json
    assert paths.PLATFORM.parent == paths.METRICS.parent
    assert record["tensorflow"] == tensorflow.__version__ and record["cpu"]


def test_missing_model_stops_with_its_name_and_writes_nothing(workspace, monkeypatch):
    monkeypatch.chdir(workspace)  # as dvc repro runs it: the messages name dvc.yaml's paths
    (workspace / "models/tuned.keras").unlink()
    with pytest.raises(DataError) as caught:
        evaluate.evaluate(SETTINGS, Path("."))
    assert str(caught.value) == (
        "models/tuned.keras: not found; `dvc repro tune` produces it, or "
        "`dvc pull models/tuned.keras` fetches it from the project's DVC remote")
    assert not (workspace / "reports").exists()


@pytest.mark.parametrize("model, damage, problem", [
    # the case: Keras alone said "File not found: filepath=models/tuned.keras"
    ("tuned", lambda data: data[:5000], "truncated or not a .keras file (File is not a zip file)"),
    ("baseline", lambda data: b"not a zip archive",
     "truncated or not a .keras file (File is not a zip file)"),
])
def test_damaged_model_stops_with_one_message(workspace, monkeypatch, model, damage, problem):
    monkeypatch.chdir(workspace)
    path, stage = paths.MODELS[model], {"tuned": "tune", "baseline": "train"}[model]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as caught:
        evaluate.evaluate(SETTINGS, Path("."))
    assert str(caught.value) == (
        f"{path}: {problem}; `dvc repro {stage}` rebuilds it, or `dvc pull --force {path}` "
        "fetches it again from the project's DVC remote")
    assert not (workspace / paths.METRICS).exists()


def test_invalid_top_k_is_refused(project):
    set_params(project, {"evaluate.top_k": 0})
    with pytest.raises(ParamsError, match="^evaluate.top_k: must be >= 1, got 0$"):
        EvaluateParams.from_params(params.load("evaluate", project / "params.yaml",
                                               project / "dvc.yaml"))
