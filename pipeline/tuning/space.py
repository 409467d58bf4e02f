"""The tune section's search space: every model and train setting a trial needs, each a
range, a list of choices or one fixed value, checked by the same rules as the section
it stands for (pipeline/core/params.py). `TuneParams.from_params(params.load("tune"))`
checks the whole section, space included, before any long work.

Hand-written rather than pydantic types: a space entry is one of three shapes whose
values follow another class's field rule, and the messages name the entry's own key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Mapping, get_type_hints

import pydantic
from pydantic import PlainValidator, StrictBool

from pipeline.core import params
from pipeline.core.errors import ParamsError
from pipeline.core.params import ModelParams, TrainParams

KEY = "tune.space"
# What a trial needs: every model and train setting; tune.seed stands for train.seed.
SEARCHABLE = params.CONFIGURATION
RANGE_KEYS = ("low", "high", "log")


@dataclass(frozen=True)
class Range:
    """Searched between low and high (integers for an integer setting), log-uniform if log."""

    low: float
    high: float
    log: bool
    integer: bool


@dataclass(frozen=True)
class Choices:
    """Searched among these values, as written: Optuna's storages take numbers and strings."""

    values: tuple


@dataclass(frozen=True)
class Fixed:
    """Not searched: every trial uses this value."""

    value: Any


SpaceEntry = Range | Choices | Fixed


def setting_value(name: str, value: Any, key: str) -> Any:
    """A space value as the model/train setting `name` takes it, checked. Hidden layers
    are written '512-256' (or 512 for one layer): a string, so that a list in params.yaml
    always means choices and Optuna can store the choice."""
    if name == "hidden_units":
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not all(p.strip().isdigit() for p in text.split("-")):
            raise ParamsError(f"{key}: must be layer widths such as '512-256' (or one "
                              f"integer), got {value!r}")
        value = [int(p) for p in text.split("-")]
    return SEARCHABLE[name].check_value(name, value, key)


def unknown_and_missing(given: Iterable[str], known: Collection[str],
                        required: Iterable[str]) -> tuple[list[str], list[str]]:
    """The keys of `given` that `known` lacks, and the `required` ones `given` lacks: a
    range's parts and the space's settings are checked alike."""
    given = list(given)
    return [k for k in given if k not in known], [k for k in required if k not in given]


def check_range(key: str, name: str, spec: dict) -> Range:
    kind = get_type_hints(SEARCHABLE[name])[name]
    if kind not in (int, float):
        raise ParamsError(f"{key}: a range needs a numeric setting; give a list of choices or "
                          f"one value")
    unknown, missing = unknown_and_missing(spec, RANGE_KEYS, ("low", "high"))
    if unknown:
        raise ParamsError(f"{key}.{unknown[0]}: unknown key in a range (known: "
                          f"{', '.join(RANGE_KEYS)})")
    if missing:
        raise ParamsError(f"{key}.{missing[0]}: missing; a range is {{low: .., high: .., "
                          f"log: true|false}}")
    low, high = (setting_value(name, spec[part], f"{key}.{part}") for part in ("low", "high"))
    log = params.validate(StrictBool, spec.get("log", False), f"{key}.log")
    if low > high:
        raise ParamsError(f"{key}: low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ParamsError(f"{key}.low: must be > 0 on a log scale, got {low}")
    return Range(low, high, log, integer=kind is int)


def check_space_entry(key: str, name: str, value: Any) -> SpaceEntry:
    """{low, high, log} is a range, a list is choices, anything else one fixed value."""
    if isinstance(value, dict):
        return check_range(key, name, value)
    if not isinstance(value, list):
        setting_value(name, value, key)
        return Fixed(value)
    if not value:
        raise ParamsError(f"{key}: an empty list of choices; give at least one value")
    for i, choice in enumerate(value):
        if not isinstance(choice, (str, int, float, bool)):
            raise ParamsError(f"{key}[{i}]: a choice must be a number, a string or true/false "
                              f"(layers are written '512-256'), got {choice!r}")
        setting_value(name, choice, f"{key}[{i}]")
    if len({(type(c), c) for c in value}) < len(value):  # a grid would run a trial twice
        raise ParamsError(f"{key}: lists a choice more than once: {value!r}")
    return Choices(tuple(value))


def check_space(space: Any) -> dict[str, SpaceEntry]:
    """Every setting a trial needs, each a range, choices or a fixed value; nothing else."""
    if space and isinstance(space, dict) and all(isinstance(e, SpaceEntry)
                                                 for e in space.values()):
        return space  # checked already: a TuneParams copied with dataclasses.replace
    if not isinstance(space, dict):
        raise ParamsError(f"{KEY}: must be a mapping of model/train setting -> range, list of "
                          f"choices or one value, got {space!r}")
    unknown, missing = unknown_and_missing(space, SEARCHABLE, SEARCHABLE)
    if unknown:
        raise ParamsError(f"{KEY}.{unknown[0]}: unknown key, not a model or train setting; "
                          f"{params.suggest(unknown[0], SEARCHABLE, KEY + '.')}")
    if missing:
        raise ParamsError(f"{KEY}.{missing[0]}: missing; the tune section lists every "
                          f"setting a trial needs (a range, a list of choices or one value)")
    return {name: check_space_entry(f"{KEY}.{name}", name, value)
            for name, value in space.items()}


def smallest(entry: SpaceEntry) -> Any:
    if isinstance(entry, Range):
        return entry.low
    return min(entry.values) if isinstance(entry, Choices) else entry.value


def largest(entry: SpaceEntry) -> Any:
    if isinstance(entry, Range):
        return entry.high
    return max(entry.values) if isinstance(entry, Choices) else entry.value


@pydantic.dataclasses.dataclass(frozen=True, config=params.CONFIG)
class TuneParams(params.TuneSettings):
    """The search: its size, sampler, pruner, seed and space."""

    space: Annotated[Mapping[str, SpaceEntry], PlainValidator(check_space)]

    @pydantic.model_validator(mode="after")
    def _check_together(self):
        for name, entry in self.space.items():
            if self.sampler == "grid" and isinstance(entry, Range):
                raise ParamsError(f"{KEY}.{name}: the grid sampler needs a list of values, "
                                  f"not a range")
        if self.min_complete > self.n_trials:
            raise ParamsError(f"tune.min_complete: must not exceed tune.n_trials "
                              f"({self.n_trials}), got {self.min_complete}")
        fewest_epochs = smallest(self.space["epochs"])
        if self.pruner != "none" and self.min_epochs >= fewest_epochs:
            raise ParamsError(f"tune.min_epochs: must be below the epochs of every trial "
                              f"({fewest_epochs} in {KEY}.epochs), or nothing is pruned; "
                              f"got {self.min_epochs}")
        if self.refit and largest(self.space["early_stopping_patience"]) > 0:
            raise ParamsError(f"tune.refit: the refit trains on the validation split too, so "
                              f"nothing is left to stop early on; set {KEY}."
                              f"early_stopping_patience to 0 or tune.refit to false")
        return self

    @property
    def searched(self) -> list[str]:
        return [name for name, entry in self.space.items() if not isinstance(entry, Fixed)]


def trial_settings(values: Mapping[str, Any], seed: int) -> tuple[ModelParams, TrainParams]:
    """A trial's model and train settings from the space values it drew."""
    def build(cls, **extra):
        return cls.build({**{name: setting_value(name, values[name], f"{KEY}.{name}")
                             for name in cls.field_names() if name not in extra}, **extra},
                         prefix=KEY)

    return build(ModelParams), build(TrainParams, seed=seed)
