"""visualize stage: PNG figures in reports/figures/ for `dvc plots show`.

It reads only files (prepared data, DVCLive curves, tune's tables, evaluate's reports,
the ablation's summary)
and never loads TensorFlow, so it runs in seconds; the predictions it shows are
evaluate's, and the tuning figures come from tune's tables, not from its Optuna study.
The inputs below are exactly the stage's deps in dvc.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import CLASS_NAMES
from pipeline.ablation import effects
from pipeline.core import params
from pipeline.core.atomic import atomic_dir
from pipeline.core.errors import DataError
from pipeline.core.paths import (
    ABLATION_SUMMARY,
    CONFUSION_FILE,
    CURVE_METRICS,
    CURVE_PARTS,
    FIGURES_DIR,
    LIVE_DIRS,
    METRICS,
    PREDICTIONS_FILE,
    PREPARED_DIR,
    TRIALS,
    TUNE_CURVES,
    TUNE_IMPORTANCE,
    curve_file,
    eval_file,
)
from pipeline.core.runner import log, run_stage
from pipeline.data.prepared import SPLITS, load_labels, load_split
from pipeline.reporting import figures
from pipeline.tuning import reports

TUNE_TABLES = {  # tune's reports and the columns read from each
    TRIALS: ("number", "state", "value", "seconds"),
    TUNE_CURVES: ("number", "epoch", "val_accuracy"),
    TUNE_IMPORTANCE: ("setting", "importance", "epoch", "trials"),
}
SHOWN_MODEL = "tuned"  # the confusion matrix and gallery show the model the pipeline ships
GALLERY_SEED = 0
WRITERS = {"baseline": "train", "tuned": "tune"}  # the stage that writes each model's curves


def inputs() -> dict[Path, str]:
    """Every file the stage reads (its dvc.yaml deps), with the stage that writes it."""
    files = {PREPARED_DIR / f"{split}.npz": "prepare" for split in SPLITS}
    for model, live_dir in LIVE_DIRS.items():
        files.update({curve_file(live_dir, part, metric): WRITERS[model]
                      for part in CURVE_PARTS for metric in CURVE_METRICS})
    files.update({path: "tune" for path in TUNE_TABLES})
    for name in (CONFUSION_FILE, PREDICTIONS_FILE):
        files[eval_file(SHOWN_MODEL, name)] = "evaluate"
    files[METRICS] = "evaluate"
    files[ABLATION_SUMMARY] = "ablate"
    return files


# --- reading inputs (require_inputs has checked they exist) -------------------------


def require_inputs(root: Path) -> None:
    """Fail on the first missing input before drawing anything."""
    for path, stage in inputs().items():
        if not (root / path).is_file():
            raise DataError(f"{path}: not found; run the {stage} stage first")


def _read_tsv_metric(path: Path, metric: str) -> pd.Series:
    frame = pd.read_csv(path, sep="\t")
    column = metric if metric in frame.columns else frame.columns[-1]
    return frame.set_index("step")[column]


def read_curves(live_dir: Path) -> pd.DataFrame:
    """DVCLive's per-epoch TSVs as one frame: epoch (from 1), train_/val_ accuracy, loss."""
    columns = {f"{prefix}_{metric}": _read_tsv_metric(curve_file(live_dir, part, metric), metric)
               for prefix, part in zip(("train", "val"), CURVE_PARTS)
               for metric in CURVE_METRICS}
    frame = pd.concat(columns, axis=1, join="inner").sort_index()
    return frame.rename_axis("step").reset_index().assign(epoch=lambda f: f["step"] + 1)


def read_test_accuracy(root: Path) -> dict[str, float]:
    document = json.loads((root / METRICS).read_text())
    return {model: float(document[model]["test_accuracy"])
            for model in LIVE_DIRS if model in document}


# --- choosing what to show ----------------------------------------------------------


def gallery_indices(correct: np.ndarray, gallery_size: int,
                    seed: int = GALLERY_SEED) -> np.ndarray:
    """A fixed, sorted sample of the test split, up to half of it mistakes.

    At 90% accuracy a plain random sample often shows no mistake at all, and the
    mistakes are what a reader wants to see; all images when the split is small.
    """
    correct = np.asarray(correct, dtype=bool)
    if gallery_size >= len(correct):
        return np.arange(len(correct))
    rng = np.random.default_rng(seed)
    wrong, right = np.flatnonzero(~correct), np.flatnonzero(correct)
    n_wrong = min(len(wrong), gallery_size // 2)
    chosen = np.concatenate([rng.choice(wrong, n_wrong, replace=False),
                             rng.choice(right, gallery_size - n_wrong, replace=False)])
    return np.sort(chosen)


# --- one builder per figure ---------------------------------------------------------


def class_distribution_figure(settings: params.VisualizeParams, root: Path):
    labels = {split: load_labels(split, root / PREPARED_DIR) for split in SPLITS}
    return figures.class_distribution(labels, CLASS_NAMES)


def sample_images_figure(settings: params.VisualizeParams, root: Path):
    images, labels = load_split("train", root / PREPARED_DIR)
    return figures.sample_images(images, labels, CLASS_NAMES, settings.samples_per_class)


def training_curves_figure(settings: params.VisualizeParams, root: Path):
    curves = {model: read_curves(root / live_dir) for model, live_dir in LIVE_DIRS.items()}
    return figures.training_curves(curves, read_test_accuracy(root))


def confusion_matrix_figure(settings: params.VisualizeParams, root: Path):
    confusion = pd.read_csv(root / eval_file(SHOWN_MODEL, CONFUSION_FILE), index_col=0)
    accuracy = read_test_accuracy(root).get(SHOWN_MODEL)
    detail = f"; test accuracy {accuracy:.4f}" if accuracy is not None else ""
    return figures.confusion_heatmap(
        confusion, f"Confusion matrix of the {SHOWN_MODEL} model on the test split\n"
                   f"(rows normalized by true class{detail})")


def predictions_gallery_figure(settings: params.VisualizeParams, root: Path):
    images, _ = load_split("test", root / PREPARED_DIR)
    predictions = pd.read_csv(root / eval_file(SHOWN_MODEL, PREDICTIONS_FILE))
    if len(predictions) != len(images):
        raise DataError(f"{eval_file(SHOWN_MODEL, PREDICTIONS_FILE)}: {len(predictions)} rows "
                        f"but the test split has {len(images)}; rerun the evaluate stage")
    correct = predictions["correct"].astype(bool).to_numpy()
    chosen = gallery_indices(correct, settings.gallery_size)
    shown = predictions.iloc[chosen]
    wrong = int((~correct[chosen]).sum())
    return figures.predictions_gallery(
        images[chosen], shown, f"{SHOWN_MODEL} model on {len(shown)} test images: "
                               f"{len(shown) - wrong} right, {wrong} wrong (in red)")


def read_tune_table(root: Path, path: Path) -> pd.DataFrame:
    table = pd.read_csv(root / path)
    missing = [c for c in TUNE_TABLES[path] if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} column; rerun the tune stage")
    return table


def tuning_history_figure(settings: params.VisualizeParams, root: Path):
    return figures.optimization_history(read_tune_table(root, TRIALS))


def tuning_curves_figure(settings: params.VisualizeParams, root: Path):
    return figures.trial_curves(read_tune_table(root, TUNE_CURVES),
                                read_tune_table(root, TRIALS))


def tuning_parallel_figure(settings: params.VisualizeParams, root: Path):
    trials = read_tune_table(root, TRIALS)
    columns = reports.searched_columns(trials)
    names = [reports.setting_name(c) for c in columns]
    return figures.parallel_coordinates(trials.rename(columns=dict(zip(columns, names))), names)


def tuning_importance_figure(settings: params.VisualizeParams, root: Path):
    return figures.param_importance(read_tune_table(root, TUNE_IMPORTANCE))


def read_ablation_summary(root: Path) -> pd.DataFrame:
    summary = pd.read_csv(root / ABLATION_SUMMARY)
    needed = ["variant", "change", "seeds", "seconds_mean", "val_accuracy_mean",
              "test_accuracy_mean", "test_accuracy_diff", "test_accuracy_diff_low",
              "test_accuracy_diff_high"]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise DataError(f"{ABLATION_SUMMARY}: no {', '.join(missing)} column; rerun the "
                        f"ablate stage")
    return summary


def ablation_figure(settings: params.VisualizeParams, root: Path):
    return figures.ablation_effects(read_ablation_summary(root))


def time_vs_accuracy_figure(settings: params.VisualizeParams, root: Path):
    return figures.time_vs_accuracy(effects.time_accuracy_points(
        read_tune_table(root, TRIALS), read_ablation_summary(root)))


FIGURES = {
    "class_distribution.png": class_distribution_figure,
    "sample_images.png": sample_images_figure,
    "training_curves.png": training_curves_figure,
    "confusion_matrix.png": confusion_matrix_figure,
    "predictions_gallery.png": predictions_gallery_figure,
    "tuning_history.png": tuning_history_figure,
    "tuning_curves.png": tuning_curves_figure,
    "tuning_parallel.png": tuning_parallel_figure,
    "tuning_importance.png": tuning_importance_figure,
    "ablation_effects.png": ablation_figure,
    "time_vs_accuracy.png": time_vs_accuracy_figure,
}


# --- the stage ----------------------------------------------------------------------


def draw_all(settings: params.VisualizeParams, root: Path = Path(".")) -> None:
    """Every figure from root's inputs into root's figures folder, all or none."""
    require_inputs(root)
    with atomic_dir(root / FIGURES_DIR) as tmp:
        for name, build in FIGURES.items():
            figures.save(build(settings, root), tmp / name, settings.dpi)


def main() -> None:
    draw_all(params.VisualizeParams.from_params(params.load("visualize")))
    log(f"visualize: wrote {len(FIGURES)} figures to {FIGURES_DIR}/ ({', '.join(FIGURES)})")


if __name__ == "__main__":
    run_stage("visualize", main)
