"""evaluate stage: score the baseline and the tuned model on the test split.

Writes reports/metrics.json (DVC metrics: each model's numbers, the tuned-minus-
baseline gain and whether it is beyond chance: pipeline/reporting/significance.py),
reports/platform.json (the machine that computed them) and reports/eval/: per model the
per-class table, the confusion matrix counts and the predictions (which also feed DVC's
confusion plot), and per class what the tuned model fixed and broke. Every metric comes
from scikit-learn, so there is one definition of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn import metrics

from pipeline import CLASS_NAMES
from pipeline.core import params, registry
from pipeline.core.atomic import atomic_dir, write_json
from pipeline.core.errors import DataError
from pipeline.core.paths import (
    CLASS_CHANGE,
    CONFUSION_FILE,
    EVAL_DIR,
    METRICS,
    MODELS,
    PER_CLASS_FILE,
    PLATFORM,
    PREDICTIONS_FILE,
    PREPARED_DIR,
)
from pipeline.core.runner import log, quiet_tensorflow, run_stage
from pipeline.data.prepared import load_split, split_path
from pipeline.reporting import significance
from pipeline.training import engine
from pipeline.training.platform import platform_record


@dataclass
class Evaluation:
    summary: dict[str, float]  # test_accuracy, test_loss, macro_f1, top_<k>_accuracy
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: pd.DataFrame  # counts; rows actual, columns predicted, class names


def top_k_key(top_k: int) -> str:
    return f"top_{top_k}_accuracy"


def metrics_for(y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str],
                top_k: int) -> Evaluation:
    """All test metrics of one model from its class probabilities.

    Labels are fixed to every class so a class absent from a small test set still gets
    its row (and its zero) instead of silently shifting the columns.
    """
    labels = list(range(len(class_names)))
    y_pred = probabilities.argmax(axis=1)
    summary = {
        "test_accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "test_loss": float(metrics.log_loss(y_true, probabilities, labels=labels)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=labels, average="macro",
                                           zero_division=0)),
        top_k_key(top_k): float(metrics.top_k_accuracy_score(y_true, probabilities, k=top_k,
                                                             labels=labels)),
    }
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"class": list(class_names), "precision": precision,
                              "recall": recall, "f1": f1, "support": support})
    counts = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    confusion = pd.DataFrame(counts, index=pd.Index(class_names, name="actual"),
                             columns=list(class_names))
    return Evaluation(summary, per_class, confusion)


def predictions_table(y_true: np.ndarray, probabilities: np.ndarray,
                      class_names: Sequence[str]) -> pd.DataFrame:
    """One row per test image: what it is, what the model said, and how sure it was."""
    names = np.asarray(class_names, dtype=object)
    y_pred = probabilities.argmax(axis=1)
    return pd.DataFrame({
        "index": np.arange(len(y_true)),
        "actual": names[y_true],
        "predicted": names[y_pred],
        "confidence": probabilities.max(axis=1),
        "correct": y_pred == y_true,
    })


def gains(baseline: dict[str, float], tuned: dict[str, float]) -> dict[str, float]:
    """Tuned minus baseline for every metric (for test_loss, negative is better)."""
    return {key: tuned[key] - baseline[key] for key in baseline}


def metrics_document(summaries: dict[str, dict[str, float]],
                     comparison: dict | None = None) -> dict:
    document = {**summaries, "gain": gains(summaries["baseline"], summaries["tuned"])}
    return {**document, "significance": comparison} if comparison else document


def write_eval_dir(folder: Path, results: dict[str, tuple[Evaluation, pd.DataFrame]],
                   class_change: pd.DataFrame | None = None) -> None:
    """All of reports/eval at once: a failed run leaves the previous folder intact."""
    with atomic_dir(folder) as tmp:
        for name, (evaluation, predictions) in results.items():
            model_dir = tmp / name
            model_dir.mkdir()
            evaluation.per_class.to_csv(model_dir / PER_CLASS_FILE, index=False)
            evaluation.confusion.to_csv(model_dir / CONFUSION_FILE)
            predictions.to_csv(model_dir / PREDICTIONS_FILE, index=False, float_format="%.6f")
        if class_change is not None:
            class_change.to_csv(tmp / CLASS_CHANGE.relative_to(EVAL_DIR), index=False)


def require_inputs(root: Path) -> None:
    """Fail before TensorFlow loads if an input is missing."""
    split_path("test", root / PREPARED_DIR)
    for path in MODELS.values():
        if not (root / path).is_file():
            raise registry.missing_artifact(root / path)


def read_test_split(root: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_split("test", root / PREPARED_DIR)
    if len(y) == 0:
        raise DataError(f"{split_path('test', root / PREPARED_DIR)}: the test split is empty")
    return x, y


def predict(path: Path, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities in float64, rows renormalized so log_loss sees exact sums."""
    from pipeline.training.model import load_model

    model = load_model(path)  # checked: 784 inputs, one output per class
    probabilities = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float64)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def evaluate_model(path: Path, x: np.ndarray, y: np.ndarray,
                   settings: params.EvaluateParams) -> tuple[Evaluation, pd.DataFrame]:
    probabilities = predict(path, x, settings.batch_size)
    return (metrics_for(y, probabilities, CLASS_NAMES, settings.top_k),
            predictions_table(y, probabilities, CLASS_NAMES))


def evaluate(settings: params.EvaluateParams, root: Path = Path(".")) -> tuple[dict, int]:
    """Score root's models on its test split; write the reports. The metrics document and
    the number of test images."""
    require_inputs(root)
    x_test, y_test = read_test_split(root)
    engine.use(engine.TRAINING)  # scored on the engine that trained the models
    quiet_tensorflow()  # Keras loads only after params and inputs passed
    results = {name: evaluate_model(root / path, x_test, y_test, settings)
               for name, path in MODELS.items()}
    baseline, tuned = results["baseline"][1], results["tuned"][1]
    write_eval_dir(root / EVAL_DIR, results,
                   significance.class_change(baseline, tuned, CLASS_NAMES))
    document = metrics_document({name: ev.summary for name, (ev, _) in results.items()},
                                significance.compare(baseline, tuned))
    write_json(root / METRICS, document)
    write_json(root / PLATFORM, platform_record())
    return document, len(y_test)


def main() -> None:
    document, images = evaluate(params.EvaluateParams.from_params(params.load("evaluate")))
    base, tuned, gain = (document[k] for k in ("baseline", "tuned", "gain"))
    test = document["significance"]
    log(f"evaluate: test accuracy baseline {base['test_accuracy']:.4f}, tuned "
        f"{tuned['test_accuracy']:.4f} ({gain['test_accuracy']:+.4f}, 95% interval "
        f"{test['accuracy_gain_low']:+.4f} to {test['accuracy_gain_high']:+.4f}, McNemar "
        f"p = {test['mcnemar_p_value']:.2g}); macro F1 "
        f"{base['macro_f1']:.4f} -> {tuned['macro_f1']:.4f} on {images} images; "
        f"wrote {METRICS}, {PLATFORM}, {EVAL_DIR}/")


if __name__ == "__main__":
    run_stage("evaluate", main)
