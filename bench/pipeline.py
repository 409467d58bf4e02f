"""Pipeline wall time: a full `dvc repro` from prepared data, then a no-op `dvc repro`.

Forces train, tune, evaluate and visualize to run again (fetch and prepare are kept),
prints each stage's time as the stage reported it, the totals, and the peak memory of
the largest process. Training is deterministic and models are saved byte-reproducibly, so
the metrics and model hashes come out unchanged (only tune's timings differ).

    python bench/pipeline.py            # from the repository root, after `dvc repro`
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time

TIMED_STAGES = ("train", "tune", "evaluate", "visualize")


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout + result.stderr


def stage_seconds(output: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): done in (\S+)$", output, flags=re.MULTILINE))


def main() -> None:
    full, output = timed(["dvc", "repro", "--force", "--single-item", *TIMED_STAGES])
    for stage, seconds in stage_seconds(output).items():
        print(f"{stage:>10}: {seconds}")
    print(f"full dvc repro from prepared data: {full:.1f} s")
    noop, output = timed(["dvc", "repro"])
    if "Running stage" in output:
        sys.exit(f"the second dvc repro ran stages:\n{output}")
    print(f"no-op dvc repro: {noop:.2f} s")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory (largest process): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
