"""Which engine a process computes with: Keras 3 on JAX for training (train, tune), on
TensorFlow for export, which writes a TensorFlow SavedModel.

On JAX, XLA compiles Keras's whole train step (forward, backward, optimizer) into one
program whose matrix products use every core: no hand-fused optimizer and no thread
heuristic needed (docs/benchmarks.md). Keras reads KERAS_BACKEND at its first import and
XLA its thread count when JAX starts, so a stage calls `use` before anything imports
keras; a process has one backend, for good.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile

from pipeline.core.errors import PipelineError

BACKEND_ENV = "KERAS_BACKEND"
TRAINING = "jax"
EXPORT = "tensorflow"
# The size of XLA's CPU thread pool (read once, when JAX makes its CPU client). XLA_FLAGS'
# --xla_cpu_multi_thread_eigen=false did not keep it to one thread with this jaxlib.
XLA_THREADS_ENV = "PJRT_NPROC"


def use(backend: str, threads: int | None = None, force: bool = False) -> None:
    """Make `backend` this process's Keras backend, unless the user chose one in
    KERAS_BACKEND (`force` overrides that: export needs TensorFlow); `threads` caps the
    compute threads, else XLA takes one per core. Call before the first import of keras."""
    wanted = backend if force else os.environ.get(BACKEND_ENV, backend)
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != wanted:
            raise RuntimeError(f"keras already runs on {keras.backend.backend()}, not "
                               f"{wanted}: call engine.use before importing it")
    if threads is not None and _jax_started():
        raise RuntimeError("the thread count must be set before JAX starts computing")
    os.environ[BACKEND_ENV] = wanted
    if threads is not None:
        os.environ[XLA_THREADS_ENV] = str(threads)
    if wanted == TRAINING:
        reuse_compiled_programs()


def reuse_compiled_programs() -> None:
    """Let XLA hand back a program it compiled earlier in this process instead of
    compiling it again. Every new Keras model compiles its train, test and predict steps
    anew, even when they are identical to an earlier model's, as they are for the
    ablation's seeds of one variant. JAX's compilation cache, in a folder that lives as
    long as the process, makes those repeats free and leaves nothing behind (a cache
    the user set up stays theirs). A cached program is the one compiled: same numbers."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    folder = tempfile.mkdtemp(prefix="fmnist-xla-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _jax_started() -> bool:
    """Whether JAX made its CPU client, which read the thread count (importing JAX, or Keras
    on it, does not make it)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # moved: assume the worst
        return True
    return getattr(xla_bridge, "backends_are_initialized", lambda: True)()


def threads_from(env: str) -> int | None:
    """A thread count from the environment variable `env` (None when unset)."""
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
        raise PipelineError(f"{env}={value}: must be a whole number of threads >= 1")
    return int(value)


def description() -> dict:
    """The backend, its version and its thread count, for the platform record: each can
    change the last bits of the numbers."""
    from importlib import metadata

    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        return {"keras_backend": backend}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"keras_backend": backend, "jax": metadata.version("jax"),
            "jaxlib": metadata.version("jaxlib"),
            "compute_threads": int(os.environ.get(XLA_THREADS_ENV) or cores or 1)}
