"""reports/REPORT.md: the study's answers, written from the run's own files.

Every number is read from a file another stage wrote, and every conclusion is a sentence
made from those numbers: an interval that holds zero reads "not distinguishable from the
baseline". Plain Markdown with links relative to the report, so it renders on any git
host and posts as a pull-request comment (`cml comment create reports/REPORT.md`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.ablation import effects
from pipeline.core.paths import FIGURES_DIR, REPORT

NOT_DISTINGUISHABLE = "not distinguishable from the baseline"
# Figures the report links (visualize draws them; a test ties the names)
FIGURES = ("class_distribution.png", "training_curves.png", "confusion_matrix.png",
           "tuning_history.png", "tuning_importance.png", "ablation_effects.png",
           "time_vs_accuracy.png")
CHANGE_SHOWN = 3  # classes listed as most fixed and most broken


@dataclass
class Inputs:
    """What the report reads, each as the stage that wrote it left it."""

    data_card: dict
    metrics: dict  # reports/metrics.json
    class_change: pd.DataFrame
    tune_metrics: dict
    best_params: dict
    trials: pd.DataFrame
    ablation: pd.DataFrame  # summary.csv
    platform: dict


def figure_link(name: str, title: str) -> str:
    target = os.path.relpath(FIGURES_DIR / name, REPORT.parent)
    return f"![{title}]({Path(target).as_posix()})"


def points(share: float) -> str:
    """An accuracy difference (a share) in percentage points, signed, two decimals."""
    return f"{100 * share:+.2f}"


def percent(share: float) -> str:
    return f"{100 * share:.2f}%"


def interval_text(low: float, high: float) -> str:
    return f"{points(low)} to {points(high)}"


def effect_sentence(row) -> str:
    """'Removing dropout changes test accuracy by -0.62 points (95% interval -0.91 to
    -0.33, 3 seeds).' and, where the interval holds zero, that it is not distinguishable."""
    sentence = (f"{row.change[0].upper()}{row.change[1:]} changes test accuracy by "
                f"{points(row.test_accuracy_diff)} points (95% interval "
                f"{interval_text(row.test_accuracy_diff_low, row.test_accuracy_diff_high)}, "
                f"{int(row.seeds)} seeds)")
    if effects.spans_zero(row.test_accuracy_diff_low, row.test_accuracy_diff_high):
        return f"{sentence}: {NOT_DISTINGUISHABLE}."
    return f"{sentence}."


def gain_sentence(test: dict) -> str:
    gain, low, high = test["accuracy_gain"], test["accuracy_gain_low"], test["accuracy_gain_high"]
    p = test["mcnemar_p_value"]
    verdict = ("not distinguishable from chance" if effects.spans_zero(low, high) or p >= 0.05
               else "larger than chance")
    return (f"The tuned model changes test accuracy by {points(gain)} points (paired bootstrap "
            f"95% interval {interval_text(low, high)}, {test['bootstrap_resamples']} resamples "
            f"of the {test['test_images']:,} test images). It is right on "
            f"{test['tuned_only_right']:,} images the baseline gets wrong and wrong on "
            f"{test['baseline_only_right']:,} the baseline gets right; the exact McNemar test "
            f"on those gives p = {p:.3g}: the gain is {verdict}.")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def data_section(card: dict) -> list[str]:
    counts = card.get("counts", {})
    split = "the official train/test split" if card.get("official_split") else \
        "not the official train/test split"
    note = card.get("source_note", "")
    note = f" {note[0].upper()}{note[1:].rstrip('.')}." if note else ""  # fetch's own words
    lines = ["## Data", "", f"Source: `{card.get('source', '?')}` ({split}).{note}", ""]
    lines += table(["split", "images"], [[name, f"{n:,}"] for name, n in counts.items()])
    return lines + ["", figure_link("class_distribution.png", "Class distribution per split")]


def models_section(metrics: dict) -> list[str]:
    base, tuned, gain = metrics["baseline"], metrics["tuned"], metrics["gain"]
    rows = [[key, f"{base[key]:.4f}", f"{tuned[key]:.4f}", f"{gain[key]:+.4f}"]
            for key in base]
    return (["## Baseline and tuned", ""] + table(["metric (test split)", "baseline", "tuned",
                                                   "tuned - baseline"], rows)
            + ["", gain_sentence(metrics["significance"]), "",
               figure_link("training_curves.png", "Training curves"), "",
               figure_link("confusion_matrix.png", "Confusion matrix of the tuned model")])


def class_change_section(change: pd.DataFrame) -> list[str]:
    rows = [[r["class"], int(r["images"]), percent(r["baseline_recall"]),
             percent(r["tuned_recall"]), points(r["change"]), int(r["fixed"]),
             int(r["broken"])] for _, r in change.iterrows()]
    ordered = change.sort_values("net")
    fixed = ordered[ordered["net"] > 0].iloc[::-1].head(CHANGE_SHOWN)
    broken = ordered[ordered["net"] < 0].head(CHANGE_SHOWN)

    def listed(rows: pd.DataFrame) -> str:
        return ", ".join(f"{r['class']} ({int(r['net']):+d})" for _, r in rows.iterrows()) \
            or "none"

    lines = ["## What the tuned model fixed and broke, per class", "",
             f"Net gains (images fixed minus broken): {listed(fixed)}. "
             f"Net losses: {listed(broken)}."]
    return lines + [""] + table(["class", "images", "baseline recall", "tuned recall",
                                 "change, points", "fixed", "broken"], rows)


def tuning_section(tune: dict, best: dict, trials: pd.DataFrame) -> list[str]:
    found = ", ".join(f"{k} = {effects.shown(v)}" for k, v in best.get("params", {}).items())
    lines = ["## Tuning", "",
             f"{tune['trials']} trials: {tune['complete']} complete, {tune['pruned']} pruned, "
             f"{tune['failed']} failed, {tune['seconds']:.0f} s of training in all. The best, "
             f"trial {tune['best_trial']}, reached {tune['best_val_accuracy']:.4f} validation "
             f"accuracy with {found}.", ""]
    if best.get("refit_images"):
        lines += [f"The tuned model is that trial's settings trained again on the training and "
                  f"validation splits together ({best['refit_images']:,} images), after the "
                  f"search chose them on validation alone; the baseline trained on the "
                  f"training split only.", ""]
    complete = trials[trials["state"] == "COMPLETE"]["value"]
    if len(complete) > 1:
        lines += [f"The complete trials ended between {complete.min():.4f} and "
                  f"{complete.max():.4f}: a spread of {points(complete.max() - complete.min())}"
                  f" points, from one training seed each.", ""]
    return lines + [figure_link("tuning_history.png", "Tuning history"), "",
                    "The importance figure ranks the searched settings by how much they "
                    "explained validation accuracy at the last epoch every finished trial "
                    "reached (fANOVA): early training, not the final models. The ablation "
                    "below measures each knob's effect.", "",
                    figure_link("tuning_importance.png", "fANOVA importance, early epoch")]


def ablation_section(summary: pd.DataFrame) -> list[str]:
    base = summary[summary["variant"] == effects.BASELINE].iloc[0]
    variants = summary[summary["variant"] != effects.BASELINE]
    lines = ["## Ablation: one knob of the baseline at a time", "",
             f"The baseline reached {percent(base['test_accuracy_mean'])} test accuracy "
             f"(standard deviation {100 * base['test_accuracy_std']:.2f} points over "
             f"{int(base['seeds'])} seeds). Differences are paired by seed, with 95% "
             f"t-intervals over seeds.", ""]
    lines += [f"- {effect_sentence(row)}" for row in variants.itertuples(index=False)]
    rows = [[row.change, int(row.seeds), percent(row.test_accuracy_mean),
             f"{100 * row.test_accuracy_std:.2f}",
             "" if row.variant == effects.BASELINE else
             f"{points(row.test_accuracy_diff)} "
             f"({interval_text(row.test_accuracy_diff_low, row.test_accuracy_diff_high)})",
             points(row.train_val_gap_mean), f"{row.seconds_per_epoch_mean:.1f}",
             f"{row.converged_epoch_mean:.1f}"] for row in summary.itertuples(index=False)]
    return lines + [""] + table(
        ["variant", "seeds", "test accuracy", "std, points", "difference, points (95%)",
         "train - val gap, points", "s/epoch", "epoch within 0.5 points of best"], rows) + [
        "", figure_link("ablation_effects.png", "Ablation effects")]


def time_section(trials: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    front = effects.time_accuracy_points(trials, summary)
    front = front[front["pareto"]].sort_values("seconds")
    listed = "; ".join(f"{r.label} ({r.seconds:.0f} s, {r.val_accuracy:.4f})"
                       for r in front.itertuples(index=False))
    return ["## Training time against accuracy", "",
            f"On the Pareto front (nothing else is both faster and more accurate), from the "
            f"fastest: {listed}.", "",
            figure_link("time_vs_accuracy.png", "Training time against accuracy")]


def platform_section(record: dict) -> list[str]:
    keys = ("cpu", "logical_cpus", "os", "python", "tensorflow", "keras", "numpy")
    rows = [[key, str(record[key])] for key in keys if key in record]
    return ["## Platform", "", "The machine evaluate ran on (bit-identical numbers only on "
            "the same kind of machine and thread count):", ""] + table(["", ""], rows)


def render(inputs: Inputs) -> str:
    sections = [
        ["# Fashion-MNIST study report", "",
         "Generated by the `report` stage (`python -m pipeline.report`) from this run's "
         "files; no number below is typed by hand. Post it on a pull request with DVC's "
         "CML: `cml comment create reports/REPORT.md`."],
        data_section(inputs.data_card),
        models_section(inputs.metrics),
        class_change_section(inputs.class_change),
        tuning_section(inputs.tune_metrics, inputs.best_params, inputs.trials),
        ablation_section(inputs.ablation),
        time_section(inputs.trials, inputs.ablation),
        platform_section(inputs.platform),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
