"""Pipeline wall time and memory: a forced `dvc repro` of every stage, then a no-op one.

Prints the CPU, each stage's time and peak memory as the stage reported them (the largest
resident set of its process and the children it waited for), the total, and the time of a
no-op `dvc repro`. Training is deterministic and models are saved byte-reproducibly, so
the metrics and model hashes come out unchanged (only timings differ). Fetch reads the
data again from the source params.yaml names, and tune searches afresh: the script
deletes the persisted study (reports/tune/study/) first, which a forced tune would
otherwise only read.

Timings move with the host, so the matrix-product floor (bench/sgemm_floor.py, 1024-512 at
batch 128) is measured right before and right after, and the tune and full times are also
given in floor epochs: the same count on another machine, times its floor, estimates the
run there. The verdicts are against the budgets of the training-speed issue.

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

from train_speed import cpu_description, measure

MEMORY_GOAL_MIB = 2048
BUDGET_MINUTES = {"tune": 8, "full dvc repro": 12}  # on the slowest CPU kind met (AVX2)
FLOOR_NETWORK, FLOOR_BATCH = "1024-512", 128


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}")
    return seconds, result.stdout


def floor_best() -> float:
    """The floor's best 1024-512 epoch now (train_speed.py's floor variant)."""
    return measure("floor", FLOOR_NETWORK, FLOOR_BATCH, epochs=0, data="")["best_s"]


def as_seconds(shown: str) -> float:
    """A stage's time as the runner prints it (25s, 4m14s) in seconds."""
    units = {"m": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([ms])", shown)))


def budget_line(what: str, spent: float, floor: float) -> str:
    budget = BUDGET_MINUTES[what] * 60
    return (f"{what}: {spent:.1f} s = {spent / floor:.0f} floor epochs; "
            f"{'within' if spent <= budget else 'OVER'} the {BUDGET_MINUTES[what]}-minute "
            "budget on this machine")


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

    print(f"CPU: {cpu_description()}")
    before = floor_best()
    shutil.rmtree(STUDY_DIR, ignore_errors=True)
    full, output = timed(["dvc", "repro", "--force"])
    after = floor_best()
    if args.log:
        with open(args.log, "w") as log:
            log.write(output)
    reports = stage_reports(output)
    print(f"{'stage':>10} {'time':>7} {'peak MiB':>9}")
    for stage, shown, mib in reports:
        print(f"{stage:>10} {shown:>7} {mib:>9}")
    print(f"full dvc repro: {full:.1f} s")
    floor = min(before, after)
    print(f"floor ({FLOOR_NETWORK}, batch {FLOOR_BATCH}): best epoch {before:.2f} s before, "
          f"{after:.2f} s after; a floor epoch below is the better, {floor:.2f} s")
    tune = [as_seconds(shown) for stage, shown, _ in reports if stage == "tune"]
    if tune:
        print(budget_line("tune", tune[0], floor))
    print(budget_line("full dvc repro", full, floor))
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
