"""The floor under an epoch: only the matrix products of training, timed with NumPy's BLAS.

One step of the default network (params.yaml's hidden_units) multiplies, for each dense
layer, activations by weights (forward), the incoming gradient by the weights' transpose
(backward, except at the input layer) and the activations' transpose by the incoming
gradient (the weight gradient). Everything else (bias, batch norm, dropout, softmax, the
optimizer) is left out, so no training path can beat this. Run from the repository root:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/sgemm_floor.py --batch-size 128

Some machines set OPENBLAS_CORETYPE to an older kernel (Haswell) for old OpenBLAS builds;
it slows a current NumPy, so unset it for this command alone. The kernel in use is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

TRAIN_IMAGES = 54_000  # the prepared train split of the default params
INPUT_DIM, NUM_CLASSES = 28 * 28, 10


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (no threadpoolctl)"
    return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}"
                     for i in threadpool_info() if i["user_api"] == "blas") or "unknown"


def step_products(batch: int, widths: list[int], rng) -> list[tuple[np.ndarray, np.ndarray]]:
    products = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        activations = rng.random((batch, n_in), dtype=np.float32)
        weights = rng.random((n_in, n_out), dtype=np.float32)
        gradient = rng.random((batch, n_out), dtype=np.float32)
        products.append((activations, weights))           # forward
        products.append((activations.T, gradient))        # weight gradient
        if i > 0:
            products.append((gradient, weights.T))        # gradient to the layer below
    return products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hidden-units", help="e.g. 1024-512; default: params.yaml's model")
    parser.add_argument("--json", action="store_true", help="one JSON line (for train_speed.py)")
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    if args.hidden_units:
        hidden = [int(width) for width in args.hidden_units.split("-")]
    else:
        from pipeline.core import params

        hidden = list(params.ModelParams.from_params(params.load("train")).hidden_units)
    widths = [INPUT_DIM, *hidden, NUM_CLASSES]
    products = step_products(args.batch_size, widths, np.random.default_rng(0))
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in products)
    steps = -(-TRAIN_IMAGES // args.batch_size)
    timings = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(steps):
            for a, b in products:
                a @ b
        timings.append(time.perf_counter() - started)
    if args.json:
        print(json.dumps({"epoch_s": statistics.median(timings), "best_s": min(timings),
                          "blas": blas(), "load": os.getloadavg()[0]}))
        return
    print(f"BLAS: {blas()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")
    print(f"network {widths}, batch {args.batch_size}: {flops * steps / 1e9:.1f} GFLOP per epoch "
          f"of {TRAIN_IMAGES} images")
    print(f"matrix products alone: {min(timings):.3f} s/epoch best, "
          f"{statistics.median(timings):.3f} median of {args.repeats} "
          f"({flops * steps / min(timings) / 1e9:.0f} GFLOP/s at best); "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
