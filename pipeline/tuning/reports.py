"""The tune stage's report files, derived from its Optuna study: tune writes them, and
visualize reads them (as declared deps) instead of opening the study itself.

trials.csv    one row per trial: number, state, value, params_<setting> (Optuna's
              trials_dataframe), epochs_run, best/last validation accuracy, seconds
curves.csv    validation accuracy of every trial after every epoch it ran (the values
              each trial reported to the pruner), so a pruned trial's curve stops where
              it was pruned
importance.csv  fANOVA importance of each searched setting
"""

from __future__ import annotations

from typing import Sequence

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

# tune's report paths, under the names tune and its tests use (spelled in pipeline/core/paths.py)
from pipeline.core.paths import BEST_PARAMS as BEST_PARAMS_PATH
from pipeline.core.paths import LIVE_DIRS
from pipeline.core.paths import TRIALS as TRIALS_PATH
from pipeline.core.paths import TUNE_CURVES as CURVES_PATH
from pipeline.core.paths import TUNE_DIR as REPORT_DIR
from pipeline.core.paths import TUNE_IMPORTANCE as IMPORTANCE_PATH
from pipeline.core.paths import TUNE_METRICS as METRICS_PATH

LIVE_DIR = LIVE_DIRS["tuned"]  # DVCLive curves of the best complete trial

PARAM_PREFIX = "params_"  # Optuna's trials_dataframe names the searched settings so
FINISHED = (TrialState.COMPLETE.name, TrialState.PRUNED.name)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial; `value` is the final validation accuracy of a complete trial and
    the last one reported by a pruned trial."""
    table = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    if table.empty:
        return table
    curves = [[v for _, v in sorted(t.intermediate_values.items())]
              for t in study.get_trials(deepcopy=False)]
    seconds = table.pop("duration").dt.total_seconds().round(1)
    return table.assign(
        epochs_run=[len(c) for c in curves],
        best_val_accuracy=[max(c) if c else None for c in curves],
        last_val_accuracy=[c[-1] if c else None for c in curves],
        seconds=seconds)


def curves_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    rows = [(t.number, step, value) for t in trials
            for step, value in sorted(t.intermediate_values.items())]
    return pd.DataFrame(rows, columns=["number", "epoch", "val_accuracy"])


def importance_table(trials: Sequence[FrozenTrial], seed: int) -> pd.DataFrame:
    """How much each searched setting explains validation accuracy (Optuna's fANOVA
    evaluator), at the last epoch every finished trial reached: pruned trials count too,
    compared at the same point of training as the complete ones."""
    finished = [t for t in trials if t.state.name in FINISHED and t.intermediate_values]
    columns = ["setting", "importance", "epoch", "trials"]
    if len(finished) < 2 or not any(t.params for t in finished):
        return pd.DataFrame(columns=columns)
    epoch = min(max(t.intermediate_values) for t in finished)
    view = optuna.create_study(direction="maximize")
    view.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                               value=t.intermediate_values[epoch])
                     for t in finished])
    scores = optuna.importance.get_param_importances(
        view, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    return pd.DataFrame([(name, score, epoch, len(finished)) for name, score in scores.items()],
                        columns=columns)


def searched_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith(PARAM_PREFIX)]


def setting_name(column: str) -> str:
    return column.removeprefix(PARAM_PREFIX)
