"""The search behind the tune stage, kept free of training so tests can drive it cheaply.

Candidates come from scikit-learn's ParameterGrid (grid, halving) or ParameterSampler
(random). Successive halving spends training samples as its resource, as scikit-learn's
HalvingGridSearchCV does by default: every candidate trains on a small share of the
training split, the best 1/factor move on with factor times more samples, and the last
round trains on the whole split, so its winner is already the final model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sklearn.model_selection import ParameterGrid, ParameterSampler

from pipeline.errors import ParamsError
from pipeline.params import TuneParams

Candidate = dict[str, Any]


@dataclass(frozen=True)
class Round:
    index: int
    samples: int     # training samples each candidate of this round trains on
    candidates: int  # how many candidates run in this round


@dataclass(frozen=True)
class Outcome:
    """What one trial measured; `artifact` (the trained model) is not part of the record."""

    val_accuracy: float
    val_loss: float
    epochs: int = 0      # the epoch budget
    epochs_run: int = 0  # fewer than `epochs` if early stopping fired
    seconds: float = 0.0
    artifact: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Trial:
    number: int  # 1-based, in the order run
    round: int
    samples: int
    params: Candidate
    outcome: Outcome


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial
    best_artifact: Any  # the artifact of `best`; the others are dropped as the search runs


# --- candidates and schedule ---------------------------------------------------------


def candidates(tune: TuneParams) -> list[Candidate]:
    """Every combination (grid, halving) or a seeded sample of max_trials (random)."""
    grid = ParameterGrid(dict(tune.space))
    if tune.method == "random":
        sampled = ParameterSampler(dict(tune.space), n_iter=min(tune.max_trials, len(grid)),
                                   random_state=tune.seed)
        chosen = list(sampled)
    else:
        chosen = list(grid)
    # Same key order as params.yaml, whatever order scikit-learn returns.
    return [{name: candidate[name] for name in tune.space} for candidate in chosen]


def halving_rounds(n_candidates: int, n_samples: int, factor: int,
                   min_fraction: float) -> list[Round]:
    """Rounds counted back from the full split, each with 1/factor of the next one's data.

    As many rounds as both allow: no share below `min_fraction`, and no round that would
    start with fewer than one candidate (scikit-learn's n_required_iterations).
    """
    eps = 1e-9  # so that e.g. a fraction of exactly 1/9 allows two halvings by 3
    by_data = 1 + math.floor(math.log(1 / min_fraction, factor) + eps)
    by_candidates = 1 + math.floor(math.log(n_candidates, factor) + eps)
    count = max(1, min(by_data, by_candidates))
    return [Round(index=i,
                  samples=math.ceil(n_samples / factor ** (count - 1 - i)),
                  candidates=math.ceil(n_candidates / factor ** i))
            for i in range(count)]


def plan_rounds(tune: TuneParams, n_candidates: int, n_samples: int) -> list[Round]:
    if tune.method != "halving":
        return [Round(index=0, samples=n_samples, candidates=n_candidates)]
    return halving_rounds(n_candidates, n_samples, tune.halving_factor,
                          tune.min_resource_fraction)


def check_rounds(rounds: list[Round], min_samples: int) -> None:
    """Refuse a first round too small to hold every class, before any training."""
    if rounds[0].samples < min_samples:
        raise ParamsError(f"tune.min_resource_fraction: the first halving round would train on "
                          f"{rounds[0].samples} samples, fewer than the {min_samples} classes")


# --- running and ranking -----------------------------------------------------------


def rank_key(trial: Trial) -> tuple:
    """Higher val accuracy first, then lower val loss, then the earlier trial."""
    return (-trial.outcome.val_accuracy, trial.outcome.val_loss, trial.number)


def best_trial(trials: list[Trial]) -> Trial:
    """The best trial among those trained on the most samples (the full split)."""
    most = max(t.samples for t in trials)
    return min((t for t in trials if t.samples == most), key=rank_key)


RunTrial = Callable[[Candidate, int], Outcome]
OnTrial = Callable[[Trial, list[Trial]], None]


def run_search(candidate_list: list[Candidate], rounds: list[Round], run_trial: RunTrial,
               on_trial: OnTrial | None = None) -> SearchResult:
    """Run each round's candidates, promote the best to the next round, return all trials.

    Only the artifact of the best last-round trial so far is kept, so a long grid holds
    one model in memory, not all of them.
    """
    if not candidate_list:
        raise ParamsError("tune.space: no candidate configurations to try")
    trials: list[Trial] = []
    survivors = list(candidate_list)
    best, best_artifact = None, None
    for round_ in rounds:
        round_trials = []
        for candidate in survivors[:round_.candidates]:
            outcome = run_trial(candidate, round_.samples)
            trial = Trial(len(trials) + 1, round_.index, round_.samples, candidate,
                          _without_artifact(outcome))
            trials.append(trial)
            round_trials.append(trial)
            if round_ is rounds[-1] and (best is None or rank_key(trial) < rank_key(best)):
                best, best_artifact = trial, outcome.artifact
            if on_trial is not None:
                on_trial(trial, trials)
        survivors = [t.params for t in sorted(round_trials, key=rank_key)]
    return SearchResult(trials, best, best_artifact)


def _without_artifact(outcome: Outcome) -> Outcome:
    return Outcome(outcome.val_accuracy, outcome.val_loss, outcome.epochs, outcome.epochs_run,
                   outcome.seconds)


# --- progress ------------------------------------------------------------------------


def seconds_left(trials: list[Trial], rounds: list[Round], mean_epochs: float,
                 overhead_samples: int = 0) -> float:
    """Time the remaining trials should take, at the seconds per sample-epoch seen so far.

    `overhead_samples` stands for the per-epoch validation pass, which costs the same
    whatever the round's training subset.
    """
    def work(samples, epochs):
        return epochs * (samples + overhead_samples)

    done_work = sum(work(t.samples, t.outcome.epochs) for t in trials)
    done_seconds = sum(t.outcome.seconds for t in trials)
    remaining = sum((r.candidates - sum(t.round == r.index for t in trials))
                    * work(r.samples, mean_epochs) for r in rounds)
    return done_seconds / done_work * remaining if done_work > 0 else math.nan


def varying_names(space: Mapping[str, tuple]) -> list[str]:
    """The searched names with more than one value: what tells trials apart."""
    return [name for name, values in space.items() if len(values) > 1]
