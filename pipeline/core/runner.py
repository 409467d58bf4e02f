"""Entry-point plumbing shared by every stage: one-line errors and terse progress."""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable

from pipeline.core.errors import PipelineError


def quiet_tensorflow() -> None:
    """Import TensorFlow without its start-up notices, so progress lines stay readable.

    TF_CPP_MIN_LOG_LEVEL hides the C++ info logs, but the oneDNN notice is printed
    through absl before that setting is read; so stderr is muted for the import alone.
    Errors still surface: an import failure is raised after stderr is back. Stages that
    train on JAX call it too: keras.utils.set_random_seed imports TensorFlow whenever it
    is installed, to seed it as well.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def program(module: str) -> str | None:
    """argparse's prog: `python -m pipeline.x` when run so, else the console script's name."""
    return f"python -m {module}" if sys.argv[0].endswith(".py") else None


def log(message: str) -> None:
    print(message, flush=True)


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main(); a PipelineError becomes one message and exit status 1."""
    started = time.perf_counter()
    try:
        main()
    except PipelineError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no partial outputs were kept", file=sys.stderr, flush=True)
        sys.exit(130)
    log(f"{name}: done in {format_seconds(time.perf_counter() - started)}, "
        f"peak memory {peak_memory_mib():.0f} MiB")


def peak_memory_mib() -> float:
    """The largest resident set of this process and of the children it waited for (fetch's
    apt-get, dpkg-deb or npm): what the machine must hold for the stage."""
    return max(resource.getrusage(who).ru_maxrss
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
