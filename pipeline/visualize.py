"""visualize stage: PNG figures in reports/figures/ for `dvc plots show`.

It reads only files (prepared data, DVCLive curves, tune's tables, evaluate's reports)
and never loads TensorFlow, so it runs in seconds; the predictions it shows are
evaluate's, and the tuning figures come from tune's tables, not from its Optuna study.
The inputs below are exactly the stage's deps in dvc.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import CLASS_NAMES, figures, params, tune_reports
from pipeline.atomic import atomic_dir
from pipeline.cli import log, run_stage
from pipeline.errors import DataError
from pipeline.evaluate import CONFUSION_FILE, EVAL_DIR, METRICS_PATH, PREDICTIONS_FILE
from pipeline.splits import PREPARED_DIR, SPLITS, load_labels, load_split

CURVES_DIRS = {"baseline": Path("reports/train/plots/metrics"),
               "tuned": tune_reports.LIVE_DIR / "plots" / "metrics"}
TUNE_TABLES = {  # tune's reports and the columns read from each
    tune_reports.TRIALS_PATH: ("number", "state", "value"),
    tune_reports.CURVES_PATH: ("number", "epoch", "val_accuracy"),
    tune_reports.IMPORTANCE_PATH: ("setting", "importance", "epoch", "trials"),
}
FIGURES_DIR = Path("reports/figures")
SHOWN_MODEL = "tuned"  # the confusion matrix and gallery show the model the pipeline ships
GALLERY_SEED = 0
CURVE_FILES = tuple(f"{part}/{metric}.tsv" for part in ("train", "eval")
                    for metric in ("accuracy", "loss"))


def inputs() -> dict[Path, str]:
    """Every file the stage reads (its dvc.yaml deps), with the stage that writes it."""
    files = {PREPARED_DIR / f"{split}.npz": "prepare" for split in SPLITS}
    for model, folder in CURVES_DIRS.items():
        files.update({folder / name: "train" if model == "baseline" else "tune"
                      for name in CURVE_FILES})
    files.update({path: "tune" for path in TUNE_TABLES})
    for name in (CONFUSION_FILE, PREDICTIONS_FILE):
        files[EVAL_DIR / SHOWN_MODEL / name] = "evaluate"
    files[METRICS_PATH] = "evaluate"
    return files


# --- reading inputs (require_inputs has checked they exist) -------------------------


def require_inputs() -> None:
    """Fail on the first missing input before drawing anything."""
    for path, stage in inputs().items():
        if not path.is_file():
            raise DataError(f"{path}: not found; run the {stage} stage first")


def _read_tsv_metric(path: Path, metric: str) -> pd.Series:
    frame = pd.read_csv(path, sep="\t")
    column = metric if metric in frame.columns else frame.columns[-1]
    return frame.set_index("step")[column]


def read_curves(folder: Path) -> pd.DataFrame:
    """DVCLive's per-epoch TSVs as one frame: epoch (from 1), train_/val_ accuracy, loss."""
    columns = {f"{prefix}_{metric}": _read_tsv_metric(folder / part / f"{metric}.tsv", metric)
               for prefix, part in (("train", "train"), ("val", "eval"))
               for metric in ("accuracy", "loss")}
    frame = pd.concat(columns, axis=1, join="inner").sort_index()
    return frame.rename_axis("step").reset_index().assign(epoch=lambda f: f["step"] + 1)


def read_eval(model: str, file_name: str, **read_options) -> pd.DataFrame:
    return pd.read_csv(EVAL_DIR / model / file_name, **read_options)


def read_test_accuracy() -> dict[str, float]:
    document = json.loads(METRICS_PATH.read_text())
    return {model: float(document[model]["test_accuracy"])
            for model in CURVES_DIRS if model in document}


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


def class_distribution_figure(settings: params.VisualizeParams):
    labels = {split: load_labels(split) for split in SPLITS}
    return figures.class_distribution(labels, CLASS_NAMES)


def sample_images_figure(settings: params.VisualizeParams):
    images, labels = load_split("train")
    return figures.sample_images(images, labels, CLASS_NAMES, settings.samples_per_class)


def training_curves_figure(settings: params.VisualizeParams):
    curves = {model: read_curves(folder) for model, folder in CURVES_DIRS.items()}
    return figures.training_curves(curves, read_test_accuracy())


def confusion_matrix_figure(settings: params.VisualizeParams):
    confusion = read_eval(SHOWN_MODEL, CONFUSION_FILE, index_col=0)
    accuracy = read_test_accuracy().get(SHOWN_MODEL)
    detail = f"; test accuracy {accuracy:.4f}" if accuracy is not None else ""
    return figures.confusion_heatmap(
        confusion, f"Confusion matrix of the {SHOWN_MODEL} model on the test split\n"
                   f"(rows normalized by true class{detail})")


def predictions_gallery_figure(settings: params.VisualizeParams):
    images, _ = load_split("test")
    predictions = read_eval(SHOWN_MODEL, PREDICTIONS_FILE)
    if len(predictions) != len(images):
        raise DataError(f"{EVAL_DIR / SHOWN_MODEL / PREDICTIONS_FILE}: {len(predictions)} rows "
                        f"but the test split has {len(images)}; rerun the evaluate stage")
    correct = predictions["correct"].astype(bool).to_numpy()
    chosen = gallery_indices(correct, settings.gallery_size)
    shown = predictions.iloc[chosen]
    wrong = int((~correct[chosen]).sum())
    return figures.predictions_gallery(
        images[chosen], shown, f"{SHOWN_MODEL} model on {len(shown)} test images: "
                               f"{len(shown) - wrong} right, {wrong} wrong (in red)")


def read_tune_table(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    missing = [c for c in TUNE_TABLES[path] if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} column; rerun the tune stage")
    return table


def tuning_history_figure(settings: params.VisualizeParams):
    return figures.optimization_history(read_tune_table(tune_reports.TRIALS_PATH))


def tuning_curves_figure(settings: params.VisualizeParams):
    return figures.trial_curves(read_tune_table(tune_reports.CURVES_PATH),
                                read_tune_table(tune_reports.TRIALS_PATH))


def tuning_parallel_figure(settings: params.VisualizeParams):
    trials = read_tune_table(tune_reports.TRIALS_PATH)
    columns = tune_reports.searched_columns(trials)
    names = [tune_reports.setting_name(c) for c in columns]
    return figures.parallel_coordinates(trials.rename(columns=dict(zip(columns, names))), names)


def tuning_importance_figure(settings: params.VisualizeParams):
    return figures.param_importance(read_tune_table(tune_reports.IMPORTANCE_PATH))


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
}


# --- the stage ----------------------------------------------------------------------


def draw_all(settings: params.VisualizeParams, folder: Path) -> None:
    for name, build in FIGURES.items():
        figures.save(build(settings), folder / name, settings.dpi)


def main() -> None:
    settings = params.VisualizeParams.from_params(params.load("visualize"))
    require_inputs()
    with atomic_dir(FIGURES_DIR) as tmp:
        draw_all(settings, tmp)
    log(f"visualize: wrote {len(FIGURES)} figures to {FIGURES_DIR}/ ({', '.join(FIGURES)})")


if __name__ == "__main__":
    run_stage("visualize", main)
