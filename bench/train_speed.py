"""Training speed: the project's training path against a plain `model.fit` on NumPy arrays.

Same network (the default model params), same batch size, same optimizer and schedule,
on the real prepared data. Each variant runs in its own process so that its peak memory
(max RSS) is its own. Run from the repository root after `dvc repro prepare`:

    python bench/train_speed.py                 # batch sizes 32 and the default
    python bench/train_speed.py --epochs 8 --batch-sizes 32 128 256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def settings(batch_size: int, epochs: int):
    from pipeline import params

    stage = params.load("train")
    model = params.ModelParams.from_params(stage)
    train = dataclasses.replace(params.TrainParams.from_params(stage), batch_size=batch_size,
                                epochs=epochs, early_stopping_patience=0,
                                lr_schedule="cosine")  # so the end point is stable
    return model, train


class EpochTimer:
    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.start = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                self.seconds.append(time.perf_counter() - cb.start)

        self.seconds: list[float] = []
        self.callback = Callback()


def run_plain(model_settings, train_settings, train, val, timer) -> float:
    """What a first version usually does: model.fit on NumPy arrays, default settings."""
    from pipeline.model import build_model, compile_model
    from pipeline.training import seed_everything

    seed_everything(train_settings.seed)
    steps = -(-len(train[0]) // train_settings.batch_size)
    model = compile_model(build_model(model_settings), train_settings, steps)
    model.fit(*train, batch_size=train_settings.batch_size, epochs=train_settings.epochs,
              validation_data=val, shuffle=True, verbose=0, callbacks=[timer.callback])
    return float(model.evaluate(*val, verbose=0, batch_size=1024)[1])


def run_project(model_settings, train_settings, train, val, timer) -> float:
    """pipeline.training.fit, exactly as the train and tune stages call it."""
    from unittest import mock

    import keras
    from pipeline import training

    original = keras.Model.fit

    def fit_with_timer(self, *args, callbacks=(), **kwargs):
        return original(self, *args, callbacks=[*callbacks, timer.callback], **kwargs)

    with mock.patch.object(keras.Model, "fit", fit_with_timer):
        result = training.fit(model_settings, train_settings, train, val, verbose=False)
    return result.val_accuracy


def worker(variant: str, batch_size: int, epochs: int) -> None:
    from pipeline.splits import load_split

    model_settings, train_settings = settings(batch_size, epochs)
    train, val = load_split("train"), load_split("val")
    timer = EpochTimer()
    run = run_plain if variant == "plain" else run_project
    val_accuracy = run(model_settings, train_settings, train, val, timer)
    print(json.dumps({
        "variant": variant, "batch_size": batch_size, "epochs": epochs,
        # the first epoch includes tracing the graph; the steady state is what scales
        "first_epoch_s": timer.seconds[0],
        "epoch_s": statistics.median(timer.seconds[1:] or timer.seconds),
        "val_accuracy": val_accuracy,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def measure(variant: str, batch_size: int, epochs: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--batch-sizes", str(batch_size),
         "--epochs", str(epochs)], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--worker", choices=["plain", "project"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    if args.worker:
        worker(args.worker, args.batch_sizes[0], args.epochs)
        return
    from pipeline import params

    default = params.TrainParams.from_params(params.load("train")).batch_size
    batch_sizes = args.batch_sizes or sorted({32, default})
    print(f"{'batch':>5} {'variant':>8} {'s/epoch':>8} {'1st epoch':>9} {'val_acc':>8} "
          f"{'peak MiB':>9}", flush=True)
    for batch_size in batch_sizes:
        rows = {v: measure(v, batch_size, args.epochs) for v in ("plain", "project")}
        for variant, row in rows.items():
            print(f"{batch_size:>5} {variant:>8} {row['epoch_s']:>8.2f} "
                  f"{row['first_epoch_s']:>9.2f} {row['val_accuracy']:>8.4f} "
                  f"{row['peak_rss_mib']:>9.0f}", flush=True)
        speedup = rows["plain"]["epoch_s"] / rows["project"]["epoch_s"]
        delta = 100 * (rows["project"]["val_accuracy"] - rows["plain"]["val_accuracy"])
        print(f"batch {batch_size}: project is {speedup:.2f}x faster per epoch; "
              f"val accuracy {delta:+.2f} points vs plain", flush=True)


if __name__ == "__main__":
    main()
