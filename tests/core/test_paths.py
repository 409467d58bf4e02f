"""pipeline/core/paths.py and dvc.yaml name the same artifacts: Python spells each path once,
and DVC's outs, deps and plots agree with it."""

from pathlib import Path, PurePosixPath

import yaml

from pipeline.core import paths
from tests.support import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def entries(kind: str) -> set[PurePosixPath]:
    """Every path listed under `kind` (outs, deps, metrics) of any stage."""
    found = set()
    for stage in DVC["stages"].values():
        for entry in stage.get(kind) or []:
            found.add(PurePosixPath(entry if isinstance(entry, str) else next(iter(entry))))
    return found


def written_by_a_stage(path: Path) -> bool:
    path = PurePosixPath(path.as_posix())
    return any(path == out or out in path.parents for out in entries("outs") | entries("metrics"))


def test_every_artifact_path_is_a_stage_output():
    artifacts = [paths.RAW_DIR, paths.RAW_DIR / paths.SOURCE_RECORD, paths.PREPARED_DIR,
                 paths.DATA_CARD, *paths.MODELS.values(), *paths.LIVE_DIRS.values(),
                 paths.TRAIN_PLATFORM, paths.STUDY_DIR, paths.TRIALS, paths.TUNE_CURVES,
                 paths.TUNE_IMPORTANCE, paths.BEST_PARAMS, paths.TUNE_METRICS,
                 paths.SAVEDMODEL_DIR, paths.METRICS,
                 paths.PLATFORM, paths.EVAL_DIR, paths.CLASS_CHANGE, paths.FIGURES_DIR,
                 paths.ABLATION_RUNS, paths.ABLATION_SUMMARY, paths.ABLATION_METRICS,
                 paths.REPORT]
    missing = [str(p) for p in artifacts if not written_by_a_stage(p)]
    assert not missing, f"no stage in dvc.yaml writes {missing}"


def test_models_are_the_registered_artifacts():
    registered = {PurePosixPath(a["path"]) for a in DVC["artifacts"].values()}
    for path in [*paths.MODELS.values(), paths.SAVEDMODEL_DIR]:
        assert PurePosixPath(path.as_posix()) in registered


def test_the_curve_plots_read_dvclive_files_where_paths_says_they_are():
    curves = {PurePosixPath(paths.curve_file(live_dir, part, metric).as_posix())
              for live_dir in paths.LIVE_DIRS.values() for part in paths.CURVE_PARTS
              for metric in paths.CURVE_METRICS}
    plotted = {PurePosixPath(f) for plot in DVC["plots"] if isinstance(plot, dict)
               for spec in plot.values() for f in spec["y"] if f.endswith(".tsv")}
    assert plotted == curves


def test_the_confusion_plots_read_evaluates_predictions():
    plotted = {PurePosixPath(f) for plot in DVC["plots"] if isinstance(plot, dict)
               for spec in plot.values() if spec.get("template") == "confusion"
               for f in spec["y"]}
    assert plotted == {PurePosixPath(paths.eval_file(model, paths.PREDICTIONS_FILE).as_posix())
                       for model in paths.MODELS}
