"""Pipeline wall time and memory: a forced `dvc repro` of every stage, then a no-op one.

Prints each stage's time and peak memory as the stage reported them (the largest resident
set of its process and the children it waited for), the total, and the time of a no-op
`dvc repro`. Training is deterministic and models are saved byte-reproducibly, so the
metrics and model hashes come out unchanged (only timings differ). Fetch reads the data
again from the source params.yaml names, and tune searches afresh: the script deletes the
persisted study (reports/tune/study/) first, which a forced tune would otherwise only read.

    python bench/pipeline.py            # from the repository root, after `dvc repro`
    python bench/pipeline.py --log repro.log   # also keep the forced run's output
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time

MEMORY_GOAL_MIB = 2048


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}")
    return seconds, result.stdout


def stage_reports(output: str) -> list[tuple[str, str, int]]:
    """(stage, time, peak MiB) from each stage's last line."""
    found = re.findall(r"^(\w+): done in (\S+), peak memory (\d+) MiB$", output,
                       flags=re.MULTILINE)
    return [(stage, seconds, int(mib)) for stage, seconds, mib in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="write the forced dvc repro's output to this file")
    args = parser.parse_args()
    sys.path.insert(0, ".")
    from pipeline.core.paths import STUDY_DIR

    shutil.rmtree(STUDY_DIR, ignore_errors=True)
    full, output = timed(["dvc", "repro", "--force"])
    if args.log:
        with open(args.log, "w") as log:
            log.write(output)
    reports = stage_reports(output)
    print(f"{'stage':>10} {'time':>7} {'peak MiB':>9}")
    for stage, seconds, mib in reports:
        print(f"{stage:>10} {seconds:>7} {mib:>9}")
    print(f"full dvc repro: {full:.1f} s")
    largest = max(reports, key=lambda report: report[2])
    verdict = "within" if largest[2] <= MEMORY_GOAL_MIB else "OVER"
    print(f"largest stage: {largest[0]}, {largest[2]} MiB ({verdict} the "
          f"{MEMORY_GOAL_MIB} MiB goal)")
    noop, output = timed(["dvc", "repro"])
    if "Running stage" in output:
        sys.exit(f"the second dvc repro ran stages:\n{output}")
    print(f"no-op dvc repro: {noop:.2f} s")


if __name__ == "__main__":
    main()
