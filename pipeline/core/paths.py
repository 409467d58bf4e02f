"""Where every artifact lives, relative to the project root: the one place Python spells
a path (dvc.yaml names the same paths for DVC; tests/core/test_paths.py ties the two).

A stage's work is a function of its settings and a project root; its main() passes the
current folder, tests pass a temporary one.
"""

from __future__ import annotations

from pathlib import Path

# fetch
RAW_DIR = Path("data/raw")
SOURCE_RECORD = "source.json"  # in RAW_DIR: where the raw files came from

# prepare: one .npz per split (pipeline/data/prepared.py holds the format) and the data card
PREPARED_DIR = Path("data/prepared")
DATA_CARD_NAME = "data_card.json"
DATA_CARD = PREPARED_DIR / DATA_CARD_NAME

# train and tune
MODELS = {"baseline": Path("models/baseline.keras"), "tuned": Path("models/tuned.keras")}
LIVE_DIRS = {"baseline": Path("reports/train"), "tuned": Path("reports/tune/live")}  # DVCLive
TRAIN_PLATFORM = LIVE_DIRS["baseline"] / "platform.json"  # the machine train ran on

# tune: its Optuna study (a persist output) and the tables derived from it
TUNE_DIR = Path("reports/tune")
STUDY_DIR = TUNE_DIR / "study"
TRIALS = TUNE_DIR / "trials.csv"
TUNE_CURVES = TUNE_DIR / "curves.csv"
TUNE_IMPORTANCE = TUNE_DIR / "importance.csv"
BEST_PARAMS = TUNE_DIR / "best_params.json"
TUNE_METRICS = TUNE_DIR / "metrics.json"

# export
SAVEDMODEL_DIR = Path("models/tuned_savedmodel")

# evaluate: metrics.json, the machine the numbers come from, reports/eval/<model>/*.csv
METRICS = Path("reports/metrics.json")
PLATFORM = Path("reports/platform.json")
EVAL_DIR = Path("reports/eval")
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion_matrix.csv"
PREDICTIONS_FILE = "predictions.csv"
CLASS_CHANGE = EVAL_DIR / "class_change.csv"  # per class: what tuned fixed and broke

# ablate: one row per (variant, seed), one per variant over seeds, and DVC metrics
ABLATION_DIR = Path("reports/ablation")
ABLATION_RUNS = ABLATION_DIR / "runs.csv"
ABLATION_SUMMARY = ABLATION_DIR / "summary.csv"
ABLATION_METRICS = ABLATION_DIR / "metrics.json"

# visualize
FIGURES_DIR = Path("reports/figures")

# report: the study's answers in Markdown, linking the figures relative to itself
REPORT = Path("reports/REPORT.md")

# DVCLive writes a live folder's per-epoch curves here, one TSV per part and metric
CURVE_PARTS = ("train", "eval")
CURVE_METRICS = ("accuracy", "loss")


def curve_file(live_dir: Path, part: str, metric: str) -> Path:
    return live_dir / "plots" / "metrics" / part / f"{metric}.tsv"


def eval_file(model: str, name: str) -> Path:
    return EVAL_DIR / model / name
