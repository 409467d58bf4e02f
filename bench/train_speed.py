"""Training speed: the project's training path against a plain `model.fit` on NumPy arrays.

Same network (the default model params), same batch size, same optimizer and schedule,
on the real prepared data. Each run is its own process (its peak memory is its own and
no run warms another's caches); the variants take turns (A B A B ...) so that a change in
the machine's load hits them alike, and each is repeated: the table gives the median and
the range of the repeats, the load average around each run, and the CPU it ran on.
Run from the repository root after `dvc repro prepare`:

    python bench/train_speed.py                       # batch sizes 32 and the default, 3 repeats
    python bench/train_speed.py --repeats 5 --batch-sizes 32 128 256
    python bench/train_speed.py --variants plain project project@TF_ENABLE_ONEDNN_OPTS=0

A variant `NAME@KEY=VALUE,...` runs NAME with those environment variables set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_description() -> str:
    """The CPU model, its vector extensions and core count: TensorFlow's kernels (and so
    the timings) depend on them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    vector = " ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "unknown"
    return f"{model}, {os.cpu_count()} cores, vector extensions: {vector}"


def settings(batch_size: int, epochs: int):
    from pipeline.core import params

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
                cb.start, cb.cpu_start = time.perf_counter(), time.process_time()

            def on_epoch_end(cb, epoch, logs=None):
                self.seconds.append(time.perf_counter() - cb.start)
                self.cpu_seconds.append(time.process_time() - cb.cpu_start)

        # wall time is what a user waits; CPU time (all threads) is what the other
        # processes on a shared machine disturb less
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.callback = Callback()


def run_plain(model_settings, train_settings, train, val, timer) -> float:
    """What a first version usually does: model.fit on NumPy arrays, Keras's defaults
    (its own Adam, one batch per call into TensorFlow)."""
    import keras
    from pipeline.training.model import build_model, learning_rate
    from pipeline.training.fitting import seed_everything

    seed_everything(train_settings.seed)
    steps = -(-len(train[0]) // train_settings.batch_size)
    model = build_model(model_settings)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(train_settings, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*train, batch_size=train_settings.batch_size, epochs=train_settings.epochs,
              validation_data=val, shuffle=True, verbose=0, callbacks=[timer.callback])
    return float(model.evaluate(*val, verbose=0, batch_size=1024)[1])


def run_project(model_settings, train_settings, train, val, timer, **stage) -> float:
    """pipeline.training.fitting.fit, exactly as the tune stage calls it."""
    from pipeline.training import fitting

    stage = {"verbose": False, **stage}
    result = fitting.fit(model_settings, train_settings, train, val,
                          callbacks=[timer.callback], **stage)
    return result.val_accuracy


def run_stage(model_settings, train_settings, train, val, timer) -> float:
    """As the train stage calls it: progress lines and DVCLive's per-epoch curves too."""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        return run_project(model_settings, train_settings, train, val, timer,
                           live_dir=f"{folder}/live", verbose=True)


RUNS = {"plain": run_plain, "project": run_project, "train-stage": run_stage}


def worker(variant: str, batch_size: int, epochs: int) -> None:
    from pipeline.data.prepared import load_split

    model_settings, train_settings = settings(batch_size, epochs)
    train, val = load_split("train"), load_split("val")
    timer = EpochTimer()
    load_before = os.getloadavg()[0]
    val_accuracy = RUNS[variant](model_settings, train_settings, train, val, timer)
    print(json.dumps({
        # the first epoch includes tracing the graph; the steady state is what scales
        "first_epoch_s": timer.seconds[0],
        "epoch_s": statistics.median(timer.seconds[1:] or timer.seconds),
        "epoch_cpu_s": statistics.median(timer.cpu_seconds[1:] or timer.cpu_seconds),
        "val_accuracy": val_accuracy,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load": [load_before, os.getloadavg()[0]],
    }))


def measure(variant: str, batch_size: int, epochs: int) -> dict:
    name, _, overrides = variant.partition("@")
    env = dict(os.environ, **dict(kv.split("=", 1) for kv in overrides.split(",") if kv))
    done = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--batch-sizes", str(batch_size),
         "--epochs", str(epochs)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{variant} at batch {batch_size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(batch_size: int, rows: dict[str, list[dict]]) -> None:
    for variant, runs in rows.items():
        seconds = [run["epoch_s"] for run in runs]
        loads = [load for run in runs for load in run["load"]]
        accuracies = sorted({round(run["val_accuracy"], 4) for run in runs})
        cpu = [run["epoch_cpu_s"] for run in runs]
        print(f"{batch_size:>5} {variant:>34} {spread(seconds):>18} {spread(cpu):>18} "
              f"{statistics.median(run['first_epoch_s'] for run in runs):>9.2f} "
              f"{'/'.join(f'{a:.4f}' for a in accuracies):>8} "
              f"{max(run['peak_rss_mib'] for run in runs):>8.0f} "
              f"{min(loads):>5.1f}-{max(loads):<5.1f}", flush=True)
    base, *others = rows
    for variant in others:
        # per repeat: each pair ran back to back, under about the same load
        ratios = [a["epoch_s"] / b["epoch_s"] for a, b in zip(rows[base], rows[variant])]
        ratio = (statistics.median(r["epoch_s"] for r in rows[base])
                 / statistics.median(r["epoch_s"] for r in rows[variant]))
        cpu_ratio = (statistics.median(r["epoch_cpu_s"] for r in rows[base])
                     / statistics.median(r["epoch_cpu_s"] for r in rows[variant]))
        delta = 100 * (statistics.median(r["val_accuracy"] for r in rows[variant])
                       - statistics.median(r["val_accuracy"] for r in rows[base]))
        print(f"batch {batch_size}: {variant} is {ratio:.2f}x {base} (ratio of medians; "
              f"per repeat {min(ratios):.2f}-{max(ratios):.2f}x; CPU time {cpu_ratio:.2f}x); "
              f"val accuracy "
              f"{delta:+.2f} points", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["plain", "project"],
                        help="the first is the baseline the others are compared with")
    parser.add_argument("--worker", choices=sorted(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    if args.worker:
        worker(args.worker, args.batch_sizes[0], args.epochs)
        return
    from pipeline.core import params

    default = params.TrainParams.from_params(params.load("train")).batch_size
    batch_sizes = args.batch_sizes or sorted({32, default})
    print(f"CPU: {cpu_description()}")
    print(f"{args.epochs} epochs per run, {args.repeats} repeats, variants in turn; "
          f"s/epoch = median of epochs 2..{args.epochs}, then median (min-max) of the repeats",
          flush=True)
    print(f"{'batch':>5} {'variant':>34} {'s/epoch':>18} {'CPU s/epoch':>18} {'1st epoch':>9} "
          f"{'val_acc':>8} "
          f"{'peak MiB':>8} {'load':>11}", flush=True)
    for batch_size in batch_sizes:
        rows: dict[str, list[dict]] = {variant: [] for variant in args.variants}
        for _ in range(args.repeats):
            for variant in args.variants:
                rows[variant].append(measure(variant, batch_size, args.epochs))
        report(batch_size, rows)


if __name__ == "__main__":
    main()
