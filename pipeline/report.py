"""report stage: reports/REPORT.md, the study's answers, from the run's own files.

Reads the data card, evaluate's metrics and per-class change, tune's summary and trials,
the ablation's summary and the platform record; links visualize's figures (checked to
exist, so no link dangles). Never loads TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.core import params
from pipeline.core.atomic import write_text
from pipeline.core.errors import DataError
from pipeline.core.paths import (
    ABLATION_SUMMARY,
    BEST_PARAMS,
    CLASS_CHANGE,
    DATA_CARD,
    FIGURES_DIR,
    METRICS,
    PLATFORM,
    REPORT,
    TRIALS,
    TUNE_METRICS,
)
from pipeline.core.runner import log, run_stage
from pipeline.reporting import markdown

INPUTS = {  # every file the stage reads (its dvc.yaml deps), with the stage that writes it
    DATA_CARD: "prepare", METRICS: "evaluate", CLASS_CHANGE: "evaluate", PLATFORM: "evaluate",
    TUNE_METRICS: "tune", BEST_PARAMS: "tune", TRIALS: "tune", ABLATION_SUMMARY: "ablate",
}


def require_inputs(root: Path) -> None:
    for path, stage in INPUTS.items():
        if not (root / path).is_file():
            raise DataError(f"{path}: not found; run the {stage} stage first")
    for name in markdown.FIGURES:
        if not (root / FIGURES_DIR / name).is_file():
            raise DataError(f"{FIGURES_DIR / name}: not found; run the visualize stage first")


def read_json(root: Path, path: Path) -> dict:
    try:
        return json.loads((root / path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun the stage that writes it") \
            from None


def read_inputs(root: Path) -> markdown.Inputs:
    require_inputs(root)
    metrics = read_json(root, METRICS)
    if "significance" not in metrics:
        raise DataError(f"{METRICS}: no significance section; rerun the evaluate stage")
    return markdown.Inputs(
        data_card=read_json(root, DATA_CARD), metrics=metrics,
        class_change=pd.read_csv(root / CLASS_CHANGE), tune_metrics=read_json(root, TUNE_METRICS),
        best_params=read_json(root, BEST_PARAMS), trials=pd.read_csv(root / TRIALS),
        ablation=pd.read_csv(root / ABLATION_SUMMARY), platform=read_json(root, PLATFORM))


def report(root: Path = Path(".")) -> str:
    text = markdown.render(read_inputs(root))
    write_text(root / REPORT, text)
    return text


def main() -> None:
    params.load("report")  # no params of its own; refuses a params.yaml with a typo
    text = report()
    log(f"report: wrote {REPORT} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    run_stage("report", main)
