"""Does the default search (TPE + epoch pruning) beat random search without pruning?

Both search the same tune.space from params.yaml for the same wall-clock budget, for a
few tune.seed values: each run is the real tune stage (`python -m pipeline.tune`) in a
scratch folder, with n_trials too large to reach, stopped when its budget is spent
(the trial running then is lost, as in a real interruption). The study's journal then
tells how many trials finished, how many ran their whole epoch budget, and the best
validation accuracy among those (what the stage would ship). Runs alternate between
the two methods, so a change in machine load hits both alike.

    python bench/tune_search.py --budget 300 --seeds 0 1 2

Needs the prepared data (data/prepared, after `dvc repro prepare`). Long: 2 x seeds x
budget seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.tuning import study  # noqa: E402

METHODS = {  # name -> changes to the tune section
    "tpe + asha (default)": {},
    "random, no pruning": {"sampler": "random", "pruner": "none"},
}
UNREACHABLE = 100_000  # n_trials: the budget, not the count, ends a run


def load_average() -> str:
    return open("/proc/loadavg").read().split()[0]


def run(method: dict, seed: int, budget: float, prepared: Path) -> dict:
    """One budgeted tune run in a scratch project; what its study holds afterwards."""
    with tempfile.TemporaryDirectory(prefix="tune-search-") as folder:
        folder = Path(folder)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["tune"].update(method, seed=seed, n_trials=UNREACHABLE)
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
        (folder / "data").mkdir()
        (folder / "data" / "prepared").symlink_to(prepared.resolve())
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        load_before = load_average()
        try:
            subprocess.run([sys.executable, "-m", "pipeline.tune"], cwd=folder, env=env,
                           stdout=subprocess.DEVNULL, timeout=budget)
            raise SystemExit("a tune run ended before its budget; raise UNREACHABLE")
        except subprocess.TimeoutExpired:
            pass
        storage = study.embedded_storage(folder / study.STUDY_DIR)
        [name] = optuna.get_all_study_names(storage)
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finished = [t for t in trials if t.state in study.FINISHED]
    complete = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"finished": len(finished), "complete": len(complete),
            "best": max(complete, default=float("nan")),
            "load": f"{load_before}->{load_average()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300,
                        help="seconds per run, start-up included (default 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    args = parser.parse_args()
    study.quiet_optuna()
    print(f"budget {args.budget:.0f} s per run; {os.cpu_count()} CPUs; "
          f"load average at start {load_average()}", flush=True)
    print(f"{'tune.seed':>9}  {'method':22}  {'finished':>8}  {'complete':>8}  "
          f"{'best val_acc':>12}  load", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in METHODS}
    for seed in args.seeds:
        for name, method in METHODS.items():
            result = run(method, seed, args.budget, args.prepared)
            results[name].append(result)
            print(f"{seed:>9}  {name:22}  {result['finished']:>8}  {result['complete']:>8}  "
                  f"{result['best']:>12.4f}  {result['load']}", flush=True)
    for name, rows in results.items():
        mean = {key: sum(r[key] for r in rows) / len(rows)
                for key in ("finished", "complete", "best")}
        print(f"{'mean':>9}  {name:22}  {mean['finished']:>8.1f}  {mean['complete']:>8.1f}  "
              f"{mean['best']:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
