"""Training speed: the project's path against plain `model.fit`, the path before it and the floor.

Per network and batch size, in one run, the variants take turns (A B C D A B C D ...) so
that a change in the machine's load hits them alike, each repeated:

    floor      bench/sgemm_floor.py: the matrix products of an epoch alone (NumPy's BLAS,
               run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as that script says)
    tf-plain   plain `model.fit` on NumPy arrays, Keras on TensorFlow, Keras's defaults
    tf-path    the training path before the JAX engine (bench/tf_path.py)
    project    pipeline.training.fitting.fit as train and tune call it: Keras on JAX
    jax-plain  (on request) plain `model.fit` on JAX: what steps_per_execution adds
    jax-bare   (on request) the project's path without batch norm and dropout, with SGD
               (momentum) for Adam: about what XLA makes of the matrix products alone, so
               project minus jax-bare is the model's own extra work (normalization,
               dropout masks, Adam's second moment)
    no-bn, no-dropout, sgd
               (on request) the project's path without one of the three: what each costs

Same network (params.yaml's model with the hidden widths asked for), optimizer, cosine
schedule and batch size. Every run is its own process, with its own Keras backend; the
table gives each variant's median s/epoch (epochs 2.., the first compiles) over the
repeats, its range, and its ratio to the floor: the floor's best epoch, since no path can
beat it and a loaded machine only adds to it (its two BLAS threads suffer most when a
core is taken, so its median is shown too). Data: data/prepared if it is
there, else random arrays of the same shape (val accuracy then means nothing).
Run from the repository root:

    python bench/train_speed.py          # 256-128 and 1024-512, batch 128 and 256
    python bench/train_speed.py --repeats 1 --epochs 3 --networks 256-128 --batch-sizes 128
    python bench/train_speed.py --variants floor project project@PJRT_NPROC=1

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
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
TRAIN_IMAGES, VAL_IMAGES = 54_000, 6_000  # the prepared splits of the default params
BACKENDS = {"tf-plain": "tensorflow", "tf-path": "tensorflow", "project": "jax",
            "jax-plain": "jax", "jax-bare": "jax", "no-bn": "jax", "no-dropout": "jax",
            "sgd": "jax"}
VARIANTS = ["floor", *BACKENDS]


def cpu_description() -> str:
    """The CPU model, its vector extensions and core count: the kernels XLA, TensorFlow and
    BLAS pick (and so the timings) depend on them."""
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


def settings(hidden_units: tuple[int, ...], batch_size: int, epochs: int):
    from pipeline.core import params

    stage = params.load("train")
    model = dataclasses.replace(params.ModelParams.from_params(stage), hidden_units=hidden_units)
    train = dataclasses.replace(params.TrainParams.from_params(stage), batch_size=batch_size,
                                epochs=epochs, early_stopping_patience=0,
                                lr_schedule="cosine")  # so the end point is stable
    return model, train


def prepared(folder: str) -> bool:
    return (Path(folder) / "train.npz").is_file() and (Path(folder) / "val.npz").is_file()


def load_data(folder: str):
    """(train, val): the prepared splits, else random arrays of their shape."""
    import numpy as np

    if prepared(folder):
        from pipeline.data.prepared import load_split

        return load_split("train", Path(folder)), load_split("val", Path(folder))
    rng = np.random.default_rng(0)

    def split(n):
        return rng.random((n, 28 * 28), dtype=np.float32), rng.integers(0, 10, n, dtype=np.uint8)

    return split(TRAIN_IMAGES), split(VAL_IMAGES)


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
    """What a first version usually does: model.fit on NumPy arrays, Keras's defaults."""
    import keras

    from pipeline.training.fitting import seed_everything
    from pipeline.training.model import build_model, learning_rate

    seed_everything(train_settings.seed)
    steps = -(-len(train[0]) // train_settings.batch_size)
    model = build_model(model_settings)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(train_settings, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*train, batch_size=train_settings.batch_size, epochs=train_settings.epochs,
              validation_data=val, shuffle=True, verbose=0, callbacks=[timer.callback])
    return float(model.evaluate(*val, verbose=0, batch_size=1024)[1])


def run_tf_path(model_settings, train_settings, train, val, timer) -> float:
    sys.path.insert(0, str(HERE))
    import tf_path

    return tf_path.fit(model_settings, train_settings, train, val, callbacks=[timer.callback])


def run_project(model_settings, train_settings, train, val, timer) -> float:
    """pipeline.training.fitting.fit, exactly as the tune stage calls it."""
    from pipeline.training import fitting

    result = fitting.fit(model_settings, train_settings, train, val,
                         callbacks=[timer.callback], verbose=False)
    return result.val_accuracy


def without(**changes):
    """The project's path with these model or train settings changed."""
    def run(model_settings, train_settings, train, val, timer) -> float:
        model_changes = {k: v for k, v in changes.items() if hasattr(model_settings, k)}
        train_changes = {k: v for k, v in changes.items() if k not in model_changes}
        return run_project(dataclasses.replace(model_settings, **model_changes),
                           dataclasses.replace(train_settings, **train_changes),
                           train, val, timer)
    return run


RUNS = {"tf-plain": run_plain, "tf-path": run_tf_path, "project": run_project,
        "jax-plain": run_plain,
        "jax-bare": without(batch_norm=False, dropout=0.0, optimizer="sgd"),
        "no-bn": without(batch_norm=False), "no-dropout": without(dropout=0.0),
        "sgd": without(optimizer="sgd")}


def worker(variant: str, hidden_units: tuple[int, ...], batch_size: int, epochs: int,
           data: str) -> None:
    from pipeline.training import engine

    engine.use(BACKENDS[variant])  # measure() set KERAS_BACKEND: the variant's, or asked
    model_settings, train_settings = settings(hidden_units, batch_size, epochs)
    train, val = load_data(data)
    timer = EpochTimer()
    load_before = os.getloadavg()[0]
    val_accuracy = RUNS[variant](model_settings, train_settings, train, val, timer)
    print(json.dumps({
        "first_epoch_s": timer.seconds[0],
        "epoch_s": statistics.median(timer.seconds[1:] or timer.seconds),
        "epoch_cpu_s": statistics.median(timer.cpu_seconds[1:] or timer.cpu_seconds),
        "val_accuracy": val_accuracy,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load": [load_before, os.getloadavg()[0]],
    }))


def run(command: list[str], env: dict, what: str) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(variant: str, network: str, batch_size: int, epochs: int, data: str) -> dict:
    name, _, overrides = variant.partition("@")
    env = dict(os.environ, KERAS_BACKEND=BACKENDS.get(name, ""),
               **dict(kv.split("=", 1) for kv in overrides.split(",") if kv))
    what = f"{variant} {network} at batch {batch_size}"
    if name == "floor":
        for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            env.pop(key, None)
        floor = run([sys.executable, str(HERE / "sgemm_floor.py"), "--json", "--hidden-units",
                     network, "--batch-size", str(batch_size), "--repeats", "5"], env, what)
        return {"epoch_s": floor["epoch_s"], "best_s": floor["best_s"], "load": [floor["load"]],
                "blas": floor["blas"]}
    return run([sys.executable, __file__, "--worker", name, "--networks", network,
                "--batch-sizes", str(batch_size), "--epochs", str(epochs), "--data", data],
               env, what)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(network: str, batch_size: int, rows: dict[str, list[dict]]) -> None:
    floors = [variant for variant in rows if variant.partition("@")[0] == "floor"]
    floor = min(r["best_s"] for r in rows[floors[0]]) if floors else None
    for variant, runs in rows.items():
        seconds = [r["epoch_s"] for r in runs]
        loads = [load for r in runs for load in r["load"]]
        ratio = f"{statistics.median(seconds) / floor:.2f}x" if floor else "-"
        if variant in floors:
            best = min(r["best_s"] for r in runs)
            ratio = f"{best / floor:.2f}x"
            extra = f"best epoch {best:.2f} s; BLAS {runs[0]['blas']}"
        else:
            accuracies = sorted({round(r["val_accuracy"], 4) for r in runs})
            extra = (f"{spread([r['epoch_cpu_s'] for r in runs]):>18} "
                     f"{statistics.median(r['first_epoch_s'] for r in runs):>9.2f} "
                     f"{'/'.join(f'{a:.4f}' for a in accuracies):>8} "
                     f"{max(r['peak_rss_mib'] for r in runs):>8.0f}")
        print(f"{network:>9} {batch_size:>5} {variant:>24} {spread(seconds):>18} {ratio:>8} "
              f"{min(loads):>5.1f}-{max(loads):<5.1f} {extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["256-128", "1024-512"],
                        help="hidden widths, e.g. 512-256")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["floor", "tf-plain", "tf-path",
                                                          "project"],
                        help=f"of {', '.join(VARIANTS)}; the first floor is the reference")
    parser.add_argument("--data", default="data/prepared",
                        help="prepared splits (train.npz, val.npz); random arrays if absent")
    parser.add_argument("--worker", choices=sorted(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    if args.worker:
        hidden = tuple(int(width) for width in args.networks[0].split("-"))
        worker(args.worker, hidden, args.batch_sizes[0], args.epochs, args.data)
        return
    unknown = [v for v in args.variants if v.partition("@")[0] not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {VARIANTS}")
    print(f"CPU: {cpu_description()}")
    data = args.data if prepared(args.data) else "random arrays (no prepared data found)"
    print(f"data: {data}; {args.epochs} epochs per run, {args.repeats} repeats, variants in "
          f"turn; s/epoch = median of epochs 2..{args.epochs}, then median (min-max) of the "
          "repeats; x floor = median s/epoch / the floor's best epoch", flush=True)
    print(f"{'network':>9} {'batch':>5} {'variant':>24} {'s/epoch':>18} {'x floor':>8} "
          f"{'load':>11} {'CPU s/epoch':>18} {'1st epoch':>9} {'val_acc':>8} {'peak MiB':>8}",
          flush=True)
    for network in args.networks:
        for batch_size in args.batch_sizes:
            rows: dict[str, list[dict]] = {variant: [] for variant in args.variants}
            for _ in range(args.repeats):
                for variant in args.variants:
                    rows[variant].append(measure(variant, network, batch_size, args.epochs,
                                                 args.data))
            report(network, batch_size, rows)


if __name__ == "__main__":
    main()
