"""report: REPORT.md's numbers are the run's own, its sentences follow the intervals, and
its links point at the figures visualize draws."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline import CLASS_NAMES, evaluate, report, visualize
from pipeline.ablation import effects
from pipeline.core import paths
from pipeline.core.errors import DataError
from pipeline.reporting import markdown, significance

NAMES = np.asarray(CLASS_NAMES, dtype=object)


def predictions(actual, correct):
    predicted = np.where(correct, actual, (actual + 1) % len(CLASS_NAMES))
    return pd.DataFrame({"index": np.arange(len(actual)), "actual": NAMES[actual],
                         "predicted": NAMES[predicted], "confidence": 0.9, "correct": correct})


def ablation_runs():
    """A clear effect (dropout=0: -2 points on every seed, give or take 0.1) and one that
    is noise (batch_size=32: -1, +1.2, -0.5 points)."""
    rows = []
    for variant, shifts in (("baseline", (0, 0, 0)), ("dropout=0", (-0.02, -0.021, -0.019)),
                            ("batch_size=32", (-0.01, 0.012, -0.005))):
        for seed, shift in enumerate(shifts):
            rows.append({"variant": variant, "change": {"baseline": "the baseline",
                                                        "dropout=0": "removing dropout",
                                                        "batch_size=32": "batch size 128 -> 32"
                                                        }[variant],
                         "overrides": "{}", "seed": seed, "epochs_run": 2,
                         "val_accuracy": 0.85 + shift + 0.001 * seed,
                         "test_accuracy": 0.84 + shift + 0.001 * seed, "train_val_gap": 0.01,
                         "seconds_per_epoch": 3.0, "seconds": 10.0 + seed,
                         "converged_epoch": 2})
    return pd.DataFrame(rows)


@pytest.fixture
def workspace(project):
    rng = np.random.default_rng(0)
    actual = rng.integers(0, len(CLASS_NAMES), 500)
    base = predictions(actual, rng.random(500) < 0.80)
    tuned = predictions(actual, rng.random(500) < 0.88)
    summaries = {name: {"test_accuracy": float(p["correct"].mean()), "macro_f1": 0.5}
                 for name, p in (("baseline", base), ("tuned", tuned))}
    files = {
        paths.DATA_CARD: {"source": "debian", "official_split": True,
                          "counts": {"train": 450, "val": 50, "test": 500}},
        paths.METRICS: evaluate.metrics_document(summaries, significance.compare(base, tuned)),
        paths.PLATFORM: {"cpu": "Test CPU", "logical_cpus": 2, "tensorflow": "9.9"},
        paths.TUNE_METRICS: {"best_val_accuracy": 0.91, "best_trial": 2, "trials": 5,
                             "complete": 2, "pruned": 3, "failed": 0, "seconds": 120.0},
        paths.BEST_PARAMS: {"params": {"dropout": 0.3, "batch_norm": True}},
    }
    for path, content in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(json.dumps(content))
    for path in (paths.CLASS_CHANGE, paths.TRIALS, paths.ABLATION_SUMMARY):
        (project / path).parent.mkdir(parents=True, exist_ok=True)
    significance.class_change(base, tuned, CLASS_NAMES).to_csv(project / paths.CLASS_CHANGE,
                                                               index=False)
    pd.DataFrame({"number": range(5), "state": ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED",
                                                "PRUNED"],
                  "value": [0.90, 0.7, 0.91, 0.6, 0.8], "seconds": [30, 5, 60, 4, 9]}
                 ).to_csv(project / paths.TRIALS, index=False)
    effects.summarize(ablation_runs()).to_csv(project / paths.ABLATION_SUMMARY, index=False)
    (project / paths.FIGURES_DIR).mkdir(parents=True)
    for name in markdown.FIGURES:
        (project / paths.FIGURES_DIR / name).write_bytes(b"png")
    return project


def test_the_reports_numbers_are_those_in_metrics_json(workspace):
    text = report.report(workspace)
    assert (workspace / paths.REPORT).read_text() == text
    metrics = json.loads((workspace / paths.METRICS).read_text())
    base, tuned, gain = (metrics[k]["test_accuracy"] for k in ("baseline", "tuned", "gain"))
    assert f"| test_accuracy | {base:.4f} | {tuned:.4f} | {gain:+.4f} |" in text
    test = metrics["significance"]
    found = re.search(r"changes test accuracy by ([-+][\d.]+) points \(paired bootstrap 95% "
                      r"interval ([-+][\d.]+) to ([-+][\d.]+), .*right on ([\d,]+) images the "
                      r"baseline gets wrong and wrong on ([\d,]+) .* gives p = ([\d.e-]+)", text)
    assert found, text
    numbers = [float(found.group(i)) for i in (1, 2, 3)]
    assert numbers == pytest.approx([100 * test[k] for k in (
        "accuracy_gain", "accuracy_gain_low", "accuracy_gain_high")], abs=0.005)
    assert (int(found.group(4)), int(found.group(5))) == (test["tuned_only_right"],
                                                          test["baseline_only_right"])
    assert float(found.group(6)) == pytest.approx(test["mcnemar_p_value"], rel=1e-2)
    assert "5 trials: 2 complete, 3 pruned" in text
    assert "cml comment create reports/REPORT.md" in text


def sentence_of(text, change):
    return next(line for line in text.splitlines() if line.startswith(f"- {change}"))


def test_a_variant_whose_interval_spans_zero_is_not_distinguishable(workspace):
    text = report.report(workspace)
    summary = pd.read_csv(workspace / paths.ABLATION_SUMMARY).set_index("variant")
    noise, clear = summary.loc["batch_size=32"], summary.loc["dropout=0"]
    assert noise["test_accuracy_diff_low"] < 0 < noise["test_accuracy_diff_high"]
    assert clear["test_accuracy_diff_high"] < 0
    assert sentence_of(text, "Batch size 128 -> 32").endswith(
        ": not distinguishable from the baseline.")
    assert sentence_of(text, "Removing dropout") == (
        f"- Removing dropout changes test accuracy by {100 * clear['test_accuracy_diff']:+.2f} "
        f"points (95% interval {100 * clear['test_accuracy_diff_low']:+.2f} to "
        f"{100 * clear['test_accuracy_diff_high']:+.2f}, 3 seeds).")


def test_links_are_relative_and_point_at_figures_visualize_draws(workspace):
    text = report.report(workspace)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"figures/{name}" for name in markdown.FIGURES)
    for link in links:
        assert (workspace / paths.REPORT.parent / link).is_file(), link
    assert set(markdown.FIGURES) <= set(visualize.FIGURES)


def test_a_missing_input_is_named_and_no_report_is_written(workspace):
    (workspace / paths.ABLATION_SUMMARY).unlink()
    with pytest.raises(DataError, match="^reports/ablation/summary.csv: not found; run the "
                                        "ablate stage first$"):
        report.report(workspace)
    assert not (workspace / paths.REPORT).exists()


def test_dvc_yaml_deps_are_the_files_read(workspace):
    from pipeline.core import params

    deps = params.read_yaml(workspace / "dvc.yaml")["stages"]["report"]["deps"]
    data_deps = {d for d in deps if not d.startswith("pipeline/")}
    assert data_deps == {str(p) for p in report.INPUTS} | {str(paths.FIGURES_DIR)}
