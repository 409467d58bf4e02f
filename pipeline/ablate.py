"""ablate stage: which knob of the baseline matters, and by how much beyond seed noise.

Trains the baseline configuration (params.yaml's model and train) and each variant in
`ablation.variants` once per seed in `ablation.seeds`, all for `ablation.epochs` epochs
unless a variant sets its own, and writes reports/ablation/: runs.csv (per seed),
summary.csv (per variant: means, standard deviations, the difference to the baseline
with its 95% interval over seeds) and metrics.json for `dvc metrics show`.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.ablation import effects
from pipeline.core import params
from pipeline.core.atomic import write_json, write_text
from pipeline.core.paths import ABLATION_METRICS, ABLATION_RUNS, ABLATION_SUMMARY, PREPARED_DIR
from pipeline.core.runner import format_seconds, log, quiet_tensorflow, run_stage
from pipeline.data.prepared import load_split, split_path
from pipeline.training import engine


def progress(total: int, started: float):
    def line(i: int, row: dict) -> None:
        done = i + 1
        left = (time.perf_counter() - started) / done * (total - done)
        log(f"ablate run {done}/{total} {row['variant']} seed {row['seed']}: val_acc "
            f"{row['val_accuracy']:.4f} test_acc {row['test_accuracy']:.4f} after "
            f"{row['epochs_run']} epochs | {row['seconds_per_epoch']:.1f}s/epoch, "
            f"<= {format_seconds(left)} left")
    return line


def ablate(settings: params.AblationParams, model: params.ModelParams,
           train: params.TrainParams, root: Path = Path(".")):
    """Every run on root's prepared data; the summary (also written, with the runs)."""
    prepared = root / PREPARED_DIR
    for split in ("train", "val", "test"):
        split_path(split, prepared)  # a missing split fails before TensorFlow loads
    engine.use(engine.TRAINING)  # Keras loads only after the params and inputs passed
    quiet_tensorflow()
    from pipeline.ablation import runs as ablation

    runs = ablation.plan(settings, model, train)
    log(f"ablate: {len(runs) // len(settings.seeds)} configurations (the baseline and "
        f"{len(settings.variants)} variants) x {len(settings.seeds)} seeds, "
        f"{settings.epochs} epochs each unless a variant sets its own")
    splits = [load_split(split, prepared) for split in ("train", "val", "test")]
    table = ablation.run_all(runs, *splits, on_run=progress(len(runs), time.perf_counter()))
    summary = effects.summarize(table)
    write_text(root / ABLATION_RUNS, table.to_csv(index=False))
    write_text(root / ABLATION_SUMMARY, summary.to_csv(index=False))
    write_json(root / ABLATION_METRICS, effects.metrics_document(summary))
    return summary


def main() -> None:
    stage = params.load("ablate")
    settings = params.AblationParams.from_params(stage)
    # the ablation's own seeds and epochs stand for the baseline's train.seed, train.epochs
    train = params.TrainParams.from_params(stage, {"seed": settings.seeds[0],
                                                   "epochs": settings.epochs})
    summary = ablate(settings, params.ModelParams.from_params(stage), train)
    for row in summary.itertuples(index=False):
        if row.variant != effects.BASELINE:
            log(f"ablate: {row.change}: test accuracy {100 * row.test_accuracy_diff:+.2f} "
                f"points ({100 * row.test_accuracy_diff_low:+.2f} to "
                f"{100 * row.test_accuracy_diff_high:+.2f})")
    log(f"ablate: wrote {ABLATION_RUNS}, {ABLATION_SUMMARY}, {ABLATION_METRICS}")


if __name__ == "__main__":
    run_stage("ablate", main)
