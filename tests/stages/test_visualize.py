"""visualize: every figure is a real PNG, drawn headless from small generated files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from pipeline import CLASS_NAMES, NUM_CLASSES, evaluate, visualize
from pipeline.ablation import effects
from pipeline.core import params, paths
from pipeline.core.errors import DataError
from pipeline.reporting import figures
from pipeline.tuning import reports
from tests.conftest import ROOT as REPO
from tests.conftest import set_params
from tests.support.synthetic import write_prepared

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = {"class_distribution.png", "sample_images.png", "training_curves.png",
           "confusion_matrix.png", "predictions_gallery.png", "tuning_history.png",
           "tuning_curves.png", "tuning_parallel.png", "tuning_importance.png",
           "ablation_effects.png", "time_vs_accuracy.png"}


def write_curves(live_dir: Path, epochs: int, seed: int) -> None:
    """DVCLive's layout, one TSV per part and metric (paths.curve_file)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(epochs)
    for part in paths.CURVE_PARTS:
        accuracy = 0.6 + 0.3 * (1 - np.exp(-steps / 3)) + rng.normal(0, 0.01, epochs)
        for metric, values in (("accuracy", accuracy), ("loss", 1.2 - accuracy)):
            path = paths.curve_file(live_dir, part, metric)
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"step": steps, metric: values}).to_csv(path, sep="\t", index=False)


def small_study(n_trials: int = 8) -> optuna.Study:
    """A real (in-memory) Optuna study: trials that report a curve per epoch, some pruned
    by successive halving, as tune's would."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(
                                    min_resource=1, reduction_factor=2))

    def objective(trial):
        rate = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        layers = trial.suggest_categorical("hidden_units", ["16", "32-16"])
        trial.suggest_categorical("batch_norm", [True, False])
        quality = 0.9 - 0.05 * abs(np.log10(rate) + 2.5) + 0.01 * (layers == "32-16")
        for epoch in range(1, 7):
            accuracy = quality - 0.3 / epoch
            trial.report(accuracy, epoch)
            if epoch < 6 and trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study.optimize(objective, n_trials=n_trials)
    return study


def write_tune_reports(root: Path, study: optuna.Study) -> None:
    """trials.csv, curves.csv and importance.csv as the tune stage writes them."""
    (root / paths.TUNE_DIR).mkdir(parents=True, exist_ok=True)
    reports.trials_table(study).to_csv(root / paths.TRIALS, index=False)
    trials = study.get_trials()
    reports.curves_table(trials).to_csv(root / paths.TUNE_CURVES, index=False)
    reports.importance_table(trials, seed=0).to_csv(root / paths.TUNE_IMPORTANCE,
                                                         index=False)


def write_evaluation(root: Path, y_test: np.ndarray) -> None:
    """reports/eval and metrics.json as evaluate writes them, from random probabilities."""
    rng = np.random.default_rng(3)
    results, summaries = {}, {}
    for model in paths.MODELS:
        probabilities = rng.dirichlet(np.ones(NUM_CLASSES), size=len(y_test))
        confident = np.arange(0, len(y_test), 3)  # every third image: confidently right
        probabilities[confident, y_test[confident]] += 3.0
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        evaluation = evaluate.metrics_for(y_test, probabilities, CLASS_NAMES, top_k=2)
        results[model] = (evaluation, evaluate.predictions_table(y_test, probabilities,
                                                                  CLASS_NAMES))
        summaries[model] = evaluation.summary
    evaluate.write_eval_dir(root / paths.EVAL_DIR, results)
    (root / paths.METRICS).write_text(json.dumps(evaluate.metrics_document(summaries)))


def ablation_summary() -> pd.DataFrame:
    """summary.csv as ablate writes it, from a handcrafted per-seed table."""
    rng = np.random.default_rng(5)
    rows = []
    for variant, shift, seconds in (("baseline", 0.0, 20), ("dropout=0", -0.01, 19),
                                    ("batch_size=32", 0.004, 45), ("epochs=1", -0.03, 10)):
        for seed in range(3):
            rows.append({"variant": variant, "change": variant, "overrides": "{}",
                         "seed": seed, "epochs_run": 2,
                         "val_accuracy": 0.85 + shift + rng.normal(0, 0.002),
                         "test_accuracy": 0.84 + shift + rng.normal(0, 0.002),
                         "train_val_gap": 0.01, "seconds_per_epoch": seconds / 2,
                         "seconds": seconds + rng.normal(0, 1), "converged_epoch": 2})
    return effects.summarize(pd.DataFrame(rows))


def make_workspace(root: Path, splits: dict, **visualize_params) -> Path:
    """Every file the visualize stage reads, small, in a project root."""
    set_params(root, {f"visualize.{key}": value for key, value in visualize_params.items()})
    write_prepared(root / paths.PREPARED_DIR, splits)
    for seed, live_dir in enumerate(paths.LIVE_DIRS.values()):
        write_curves(root / live_dir, epochs=5 + seed, seed=seed)
    write_tune_reports(root, small_study())
    write_evaluation(root, splits["test"][1])
    (root / paths.ABLATION_DIR).mkdir(parents=True, exist_ok=True)
    ablation_summary().to_csv(root / paths.ABLATION_SUMMARY, index=False)
    return root


@pytest.fixture
def workspace(project, splits):
    return make_workspace(project, splits)


def settings_of(root: Path) -> params.VisualizeParams:
    return params.VisualizeParams.from_params(params.load("visualize", root / "params.yaml",
                                                          root / "dvc.yaml"))


def assert_valid_pngs(folder: Path) -> None:
    assert {p.name for p in folder.iterdir()} == FIGURES
    for path in folder.iterdir():
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path.name
        assert len(data) > 5_000, f"{path.name}: only {len(data)} bytes"


def test_runs_headless_without_tensorflow(workspace):
    """A fresh interpreter with no display and no backend preset; TensorFlow never loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    code = ("import sys; from pipeline import visualize; visualize.main(); "
            "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_valid_pngs(workspace / paths.FIGURES_DIR)


def test_small_data_is_drawn_gracefully(project, monkeypatch):
    """A class with 2 training images (fewer than samples_per_class) and a test split
    smaller than the gallery."""
    rng = np.random.default_rng(0)

    def split(labels):
        labels = np.asarray(labels, dtype=np.uint8)
        return rng.random((len(labels), 784), dtype=np.float32), labels

    train_labels = np.concatenate([np.repeat(np.arange(NUM_CLASSES - 1), 5), [9, 9]])
    tiny = {"train": split(train_labels), "val": split(np.arange(NUM_CLASSES)),
            "test": split(np.arange(7))}
    root = make_workspace(project, tiny, samples_per_class=20, gallery_size=100)
    monkeypatch.delenv("DISPLAY", raising=False)
    visualize.draw_all(settings_of(root), root)
    assert_valid_pngs(root / paths.FIGURES_DIR)


def test_missing_input_names_the_file_and_keeps_no_figures(workspace):
    (workspace / paths.TRIALS).unlink()
    with pytest.raises(DataError, match="^reports/tune/trials.csv: not found; run the tune stage"):
        visualize.draw_all(settings_of(workspace), workspace)
    assert not (workspace / paths.FIGURES_DIR).exists()
    assert not list((workspace / "reports").glob(".figures*"))  # no temp folder left


def test_dvc_yaml_deps_are_exactly_the_files_read():
    deps = params.read_yaml(REPO / "dvc.yaml")["stages"]["visualize"]["deps"]
    data_deps = {Path(d) for d in deps if not d.startswith("pipeline/")}
    assert data_deps == set(visualize.inputs())


def test_gallery_takes_all_test_images_when_there_are_few():
    assert visualize.gallery_indices(np.ones(5, bool), 24).tolist() == [0, 1, 2, 3, 4]


def test_gallery_shows_mistakes_even_when_they_are_rare():
    correct = np.ones(1000, bool)
    correct[[10, 500, 900]] = False  # 99.7% accuracy
    chosen = visualize.gallery_indices(correct, 24)
    assert len(set(chosen)) == 24 and chosen.max() < 1000
    assert {10, 500, 900} <= set(chosen.tolist())
    correct[:200] = False
    chosen = visualize.gallery_indices(correct, 24)
    assert (~correct[chosen]).sum() == 12  # half mistakes, half right
    assert chosen.tolist() == visualize.gallery_indices(correct, 24).tolist()  # seeded


def test_confusion_heatmap_rows_are_normalized():
    counts = pd.DataFrame(np.diag(np.arange(1, NUM_CLASSES + 1)) + 1,
                          index=CLASS_NAMES, columns=CLASS_NAMES)
    fig = figures.confusion_heatmap(counts, "test")
    shares = np.asarray(fig.axes[0].images[0].get_array())
    assert shares.sum(axis=1) == pytest.approx(np.ones(NUM_CLASSES))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(CLASS_NAMES)


def test_tuning_figures_show_every_trial_and_where_it_was_pruned(tmp_path):
    study = small_study()
    write_tune_reports(tmp_path, study)
    trials = pd.read_csv(tmp_path / paths.TRIALS)
    curves = pd.read_csv(tmp_path / paths.TUNE_CURVES)
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states and "COMPLETE" in states
    assert list(trials["state"]) == states
    assert reports.searched_columns(trials) == ["params_batch_norm",
                                                     "params_hidden_units",
                                                     "params_learning_rate"]
    fig = figures.trial_curves(curves, trials)
    lines = [line for line in fig.axes[0].get_lines() if line.get_gid()]
    assert sorted(len(line.get_xdata()) for line in lines) == \
        sorted(len(t.intermediate_values) for t in study.trials)  # one curve per trial
    stops = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x"
             and len(line.get_xdata())]
    assert sorted(float(line.get_xdata()[0]) for line in stops) == \
        sorted(float(len(t.intermediate_values)) for t in study.trials
               if t.state.name == "PRUNED")  # an x where each pruned trial stopped
    history = figures.optimization_history(trials)
    best = max(t.value for t in study.trials if t.state.name == "COMPLETE")
    step_line = [line for line in history.axes[0].get_lines()
                 if line.get_label() == "best complete trial so far"][0]
    assert step_line.get_ydata()[-1] == pytest.approx(best)
    importance = pd.read_csv(tmp_path / paths.TUNE_IMPORTANCE)
    assert set(importance["setting"]) == {"learning_rate", "hidden_units", "batch_norm"}
    assert importance["trials"].iloc[0] == len(study.trials)
    assert importance["epoch"].iloc[0] == min(len(t.intermediate_values) for t in study.trials)
    assert importance.iloc[0]["setting"] == "learning_rate"  # the one the accuracy follows


def test_a_tune_table_without_its_columns_is_refused(workspace):
    pd.DataFrame({"trial": [1]}).to_csv(workspace / paths.TUNE_CURVES, index=False)
    with pytest.raises(DataError, match="curves.csv: no number, epoch, val_accuracy column"):
        visualize.draw_all(settings_of(workspace), workspace)


def test_the_ablation_figure_shows_each_variant_with_its_interval():
    summary = ablation_summary()
    fig = figures.ablation_effects(summary)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(summary["change"][1:])
    shown = {t.get_text() for t in ax.texts}
    assert {f"{100 * d:+.2f}" for d in summary["test_accuracy_diff"][1:]} == shown


def test_time_vs_accuracy_marks_the_pareto_front_of_trials_and_variants(tmp_path):
    study = small_study()
    write_tune_reports(tmp_path, study)
    trials = pd.read_csv(tmp_path / paths.TRIALS)
    points = effects.time_accuracy_points(trials, ablation_summary())
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert (points["kind"] == "tuning trial").sum() == len(complete)
    assert (points["kind"] == "ablation variant").sum() == 4
    fig = figures.time_vs_accuracy(points)
    front_line = [line for line in fig.axes[0].get_lines()
                  if line.get_label().startswith("Pareto front")][0]
    front = points[points["pareto"]].sort_values("seconds")
    assert list(front_line.get_xdata()) == pytest.approx(list(front["seconds"]))
    for _, row in points.iterrows():  # nothing on the front is beaten on both axes
        if row["pareto"]:
            assert not ((points["seconds"] < row["seconds"])
                        & (points["val_accuracy"] > row["val_accuracy"])).any()


def test_the_importance_figure_says_it_is_an_early_epochs_answer(tmp_path):
    write_tune_reports(tmp_path, small_study())
    importance = pd.read_csv(tmp_path / paths.TUNE_IMPORTANCE)
    title = figures.param_importance(importance).axes[0].get_title()
    epoch = int(importance["epoch"].iloc[0])
    assert f"at epoch {epoch}" in title and "not the final models'" in title
