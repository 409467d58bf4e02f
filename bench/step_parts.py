"""Parts of one train step on JAX, each timed alone against the floor's NumPy products.

bench/train_speed.py compares whole epochs with the floor (bench/sgemm_floor.py: the
matrix products alone, NumPy's BLAS). This script splits the step to show what the floor
leaves out and what XLA adds:

    products   the step's matrix products one by one, those of bench/sgemm_floor.py
               (forward, weight gradient, gradient to the layer below), NumPy's BLAS
               (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as that script says) and XLA
    optimizer  Keras's optimizer update alone (`stateless_apply`, compiled, state donated
               as Keras's trainer does), for every weight of the network

Each figure is the best of 7 rounds of 50 calls, scaled to one epoch of the default
training split (54,000 images, full batches). Run from the repository root:

    python bench/step_parts.py                         # 1024-512, batch 128, adam and sgd
    python bench/step_parts.py --network 256-128 --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # see bench/sgemm_floor.py
if any(name in os.environ for name in BLAS_OVERRIDES):  # before NumPy loads its BLAS
    env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sgemm_floor import INPUT_DIM, NUM_CLASSES, TRAIN_IMAGES, blas, step_products  # noqa: E402
from train_speed import cpu_description  # noqa: E402

ROUNDS, CALLS = 7, 50


def best_seconds(call) -> float:
    """The best mean over ROUNDS rounds of CALLS calls: the machine's noise only adds."""
    call()
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(CALLS):
            call()
        rounds.append((time.perf_counter() - start) / CALLS)
    return min(rounds)


def xla_product(a: np.ndarray, b: np.ndarray):
    """The product a @ b compiled by XLA, a transposed view transposed inside the program
    (as in a train step), and its two operands as JAX arrays."""
    flips = [not m.flags.c_contiguous for m in (a, b)]
    stored = [jax.numpy.asarray(m.T if flip else m) for m, flip in zip((a, b), flips)]

    def product(x, y):
        return (x.T if flips[0] else x) @ (y.T if flips[1] else y)

    return jax.jit(product), stored


def time_products(widths: list[int], batch: int, steps: int) -> float:
    """Seconds per epoch of the step's products with NumPy, which it returns, and XLA."""
    total_numpy = total_xla = 0.0
    for a, b in step_products(batch, widths, np.random.default_rng(0)):
        compiled, (x, y) = xla_product(a, b)
        numpy_s = best_seconds(lambda a=a, b=b: a @ b)
        xla_s = best_seconds(lambda f=compiled, x=x, y=y: f(x, y).block_until_ready())
        total_numpy, total_xla = total_numpy + numpy_s, total_xla + xla_s
        shapes = f"{a.shape} @ {b.shape}"
        print(f"  {shapes:28s} numpy {numpy_s * 1e6:7.0f} us   xla {xla_s * 1e6:7.0f} us   "
              f"{xla_s / numpy_s:5.2f}x")
    print(f"  {'all products':28s} numpy {total_numpy * steps:6.2f} s/epoch   "
          f"xla {total_xla * steps:6.2f} s/epoch   {total_xla / total_numpy:5.2f}x")
    return total_numpy * steps


def time_optimizer(name: str, widths: list[int], steps: int, products_s: float) -> None:
    shapes = [s for k, n in zip(widths, widths[1:]) for s in ((k, n), (n,))]
    weights = [keras.Variable(np.zeros(s, np.float32)) for s in shapes]
    optimizer = keras.optimizers.get(name)
    optimizer.build(weights)

    def update(opt_state, weights, grads):
        """The new state in the order of the old, so that XLA updates each buffer in
        place (another order costs copies the train step does not make)."""
        new_weights, new_opt_state = optimizer.stateless_apply(opt_state, grads, weights)
        return new_opt_state, new_weights

    apply = jax.jit(update, donate_argnums=(0, 1))
    state = {"opt": [v.value for v in optimizer.variables],
             "weights": [w.value for w in weights]}
    grads = [jax.numpy.full(s, 1e-3, np.float32) for s in shapes]

    def step():
        state["opt"], state["weights"] = apply(state["opt"], state["weights"], grads)
        jax.block_until_ready(state["weights"])

    seconds = best_seconds(step)
    count = sum(int(np.prod(s)) for s in shapes)
    print(f"  {name:28s} {seconds * 1e3:6.3f} ms/step for {count:,} weights = "
          f"{seconds * steps:5.2f} s/epoch, {seconds * steps / products_s:4.2f}x of the products' "
          f"NumPy time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="1024-512")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--optimizers", nargs="+", default=["adam", "sgd"])
    args = parser.parse_args()
    widths = [INPUT_DIM, *map(int, args.network.split("-")), NUM_CLASSES]
    steps = TRAIN_IMAGES // args.batch_size
    print(f"CPU: {cpu_description()}; BLAS: {blas()}")
    print(f"{args.network} at batch {args.batch_size}: {steps} steps per epoch; best of "
          f"{ROUNDS} rounds of {CALLS} calls")
    print("products:")
    products_s = time_products(widths, args.batch_size, steps)
    print("optimizer update alone:")
    for name in args.optimizers:
        time_optimizer(name, widths, steps, products_s)


if __name__ == "__main__":
    main()
