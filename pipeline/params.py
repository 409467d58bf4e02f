"""Load params.yaml, restrict it to what a stage declares in dvc.yaml, and validate it.

This is the one module that knows the keys. A stage calls `load(stage)` and can read
only the keys its dvc.yaml entry lists under `params:`; reading any other key fails
loudly, because an undeclared read is a silent reproducibility bug (DVC would not rerun
the stage when that key changes). Every value is checked here, before any long work,
and a bad one raises ParamsError naming the key. A key no stage knows (a typo) stops
every stage, whichever keys that stage declares.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from pipeline.errors import ParamsError

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"

SOURCES = ("auto", "local", "official", "debian", "npm")
NORMALIZATIONS = ("scale", "standardize")
ACTIVATIONS = ("relu", "elu", "gelu", "selu", "swish", "tanh")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")
TUNE_METHODS = ("grid", "random", "halving")


# --- reading the files -------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError(f"{path}:{where} is not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: must be a mapping of sections, got {type(data).__name__}")
    return data


def declared_params(stage: str, dvc_file: str | Path = DVC_FILE) -> list[str]:
    """The params.yaml keys that `stage` lists under `params:` in dvc.yaml."""
    stages = read_yaml(dvc_file).get("stages") or {}
    if stage not in stages:
        raise ParamsError(f"{dvc_file}: no stage named '{stage}'")
    keys: list[str] = []
    for entry in stages[stage].get("params") or []:
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict):  # {other_file.yaml: [keys]}: not used by this project
            raise ParamsError(f"{dvc_file}: stage '{stage}' reads params from {list(entry)}; "
                              f"only {PARAMS_FILE} is supported")
    return keys


class StageParams:
    """The slice of params.yaml one stage declared; reading outside it is an error."""

    def __init__(self, stage: str, params: Mapping[str, Any], declared: list[str]):
        self.stage = stage
        self._params = params
        self._declared = set(declared)

    def is_declared(self, key: str) -> bool:
        section = key.split(".", 1)[0]
        return key in self._declared or section in self._declared

    def get(self, key: str) -> Any:
        """Value of a dotted key such as 'train.learning_rate'."""
        if not self.is_declared(key):
            raise ParamsError(
                f"{key}: stage '{self.stage}' reads this key but {DVC_FILE} does not declare it "
                f"(add it to stages.{self.stage}.params)"
            )
        section, _, name = key.partition(".")
        block = self._params.get(section)
        if block is None:
            raise ParamsError(f"{key}: missing from {PARAMS_FILE} (no '{section}' section)")
        if not isinstance(block, dict):
            raise ParamsError(f"{section}: must be a mapping in {PARAMS_FILE}")
        if name not in block:
            raise ParamsError(f"{key}: missing from {PARAMS_FILE}")
        return block[name]


def load(stage: str, params_file: str | Path = PARAMS_FILE,
         dvc_file: str | Path = DVC_FILE) -> StageParams:
    """The stage's declared slice of params.yaml, once the whole file has no unknown key."""
    values = read_yaml(params_file)
    refuse_unknown_keys(values)
    return StageParams(stage, values, declared_params(stage, dvc_file))


# --- unknown keys ------------------------------------------------------------------------


def known_keys() -> dict[str, set[str]]:
    """Section -> its keys, from the fields of the params dataclasses below."""
    known: dict[str, set[str]] = {}
    todo = list(_Section.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        known.setdefault(cls.SECTION, set()).update(f.name for f in fields(cls))
    return known


def _did_you_mean(section: str, name: str, known: dict[str, set[str]]) -> str:
    """The closest valid key: in the same section first, then in any section."""
    same = difflib.get_close_matches(name, sorted(known[section]), n=1)
    if same:
        return f"did you mean {section}.{same[0]}?"
    anywhere = sorted((key, other) for other, keys in known.items() for key in keys)
    close = difflib.get_close_matches(name, [key for key, _ in anywhere], n=1)
    if close:
        other = next(other for key, other in anywhere if key == close[0])
        return f"did you mean {other}.{close[0]}?"
    return f"known: {', '.join(sorted(known[section]))}"


def refuse_unknown_keys(values: Mapping[str, Any]) -> None:
    """Stop at the first section or key that no params class has: a typo, most likely."""
    known = known_keys()
    for section, block in values.items():
        if section not in known:
            close = difflib.get_close_matches(str(section), sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(known))}"
            raise ParamsError(f"{section}: unknown section; {hint}")
        for name in block if isinstance(block, dict) else ():
            if name not in known[section]:
                raise ParamsError(f"{section}.{name}: unknown key; "
                                  f"{_did_you_mean(section, str(name), known)}")


# --- checking single values -----------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(key: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if not _is_int(value):
        raise ParamsError(f"{key}: must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ParamsError(f"{key}: must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ParamsError(f"{key}: must be <= {high}, got {value}")
    return value


def check_float(key: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    if not _is_number(value):
        raise ParamsError(f"{key}: must be a number, got {value!r}")
    value = float(value)
    if low is not None and (value <= low if low_open else value < low):
        raise ParamsError(f"{key}: must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ParamsError(f"{key}: must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParamsError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParamsError(f"{key}: must be true or false, got {value!r}")
    return value


def check_str(key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParamsError(f"{key}: must be a string, got {value!r}")
    return value


def check_units(key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ParamsError(f"{key}: must be a non-empty list of layer widths, got {value!r}")
    return tuple(check_int(f"{key}[{i}]", v, low=1) for i, v in enumerate(value))


# --- typed params, one class per concern ---------------------------------------------


def rule(check: Callable[[str, Any], Any]) -> Any:
    """A params field and its rule, written once: `check(key, value)` returns the value
    (converted where needed) or raises ParamsError naming the key."""
    return field(metadata={"check": check})


def _float_in(low, high, low_open=False, high_open=False):
    return lambda key, v: check_float(key, v, low, high, low_open=low_open, high_open=high_open)


def _int_in(low=None, high=None):
    return lambda key, v: check_int(key, v, low, high)


def _one_of(choices):
    return lambda key, v: check_choice(key, v, choices)


def float_in(low, high, low_open=False, high_open=False) -> Any:
    return rule(_float_in(low, high, low_open, high_open))


def int_in(low=None, high=None) -> Any:
    return rule(_int_in(low, high))


def one_of(choices) -> Any:
    return rule(_one_of(choices))


class _Section:
    """A frozen dataclass built from one params.yaml section; each field carries its rule."""

    SECTION = ""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def checks(cls) -> dict[str, Callable[[str, Any], Any]]:
        """Field name -> its rule (a class still listing CHECKS by hand keeps them)."""
        by_hand = getattr(cls, "CHECKS", {})
        return {f.name: f.metadata.get("check") or by_hand[f.name] for f in fields(cls)}

    @classmethod
    def from_params(cls, params: StageParams, overrides: Mapping[str, Any] | None = None):
        """Read every field from `params`, or from `overrides` (tune's trial values)."""
        overrides = overrides or {}
        values = {}
        for name, check in cls.checks().items():
            key = f"{cls.SECTION}.{name}"
            values[name] = check(key, overrides[name] if name in overrides else params.get(key))
        return cls(**values)._check_together()

    def _check_together(self):
        """Rules that span fields; overridden where a section has them."""
        return self


@dataclass(frozen=True)
class FetchParams(_Section):
    """Where the raw IDX files come from."""

    SECTION = "data"
    source: str = one_of(SOURCES)
    local_dir: str = rule(check_str)

    def _check_together(self):
        if self.source == "local" and not self.local_dir:
            raise ParamsError("data.local_dir: must name a folder when data.source is 'local'")
        return self


@dataclass(frozen=True)
class PrepareParams(_Section):
    """How the training set is split and the pixels normalized."""

    SECTION = "data"
    val_fraction: float = float_in(0.0, 1.0, low_open=True, high_open=True)
    seed: int = int_in(low=0)
    normalize: str = one_of(NORMALIZATIONS)


@dataclass(frozen=True)
class ModelParams(_Section):
    """The feedforward network's shape and regularization."""

    SECTION = "model"
    hidden_units: tuple[int, ...] = rule(check_units)
    activation: str = one_of(ACTIVATIONS)
    dropout: float = float_in(0.0, 1.0, high_open=True)
    batch_norm: bool = rule(check_bool)
    l2: float = float_in(0.0, None)


@dataclass(frozen=True)
class TrainParams(_Section):
    """How the network is optimized."""

    SECTION = "train"
    optimizer: str = one_of(OPTIMIZERS)  # pipeline/model.py builds each (a test ties them)
    learning_rate: float = float_in(0.0, 10.0, low_open=True)
    lr_schedule: str = one_of(LR_SCHEDULES)
    batch_size: int = int_in(1, 65536)
    epochs: int = int_in(1, 10000)
    early_stopping_patience: int = int_in(low=0)
    seed: int = int_in(low=0)


# Hyperparameters tune may search: each belongs to the model or the train section.
SEARCHABLE: dict[str, type[_Section]] = {
    **{name: ModelParams for name in ModelParams.field_names()},
    **{name: TrainParams for name in TrainParams.field_names() if name != "seed"},
}


def check_space(key: str, space: Any) -> dict[str, tuple]:
    """The search space: a non-empty mapping of searchable name -> non-empty list."""
    if not isinstance(space, dict) or not space:
        raise ParamsError(f"{key}: must be a non-empty mapping of hyperparameter -> "
                          f"list of values, got {space!r}")
    checked = {}
    for name, values in space.items():
        name_key = f"{key}.{name}"
        if name not in SEARCHABLE:
            raise ParamsError(f"{name_key}: not a searchable hyperparameter "
                              f"(searchable: {', '.join(sorted(SEARCHABLE))})")
        if not isinstance(values, list) or not values:
            raise ParamsError(f"{name_key}: must be a non-empty list of values, got {values!r}")
        check = SEARCHABLE[name].checks()[name]
        checked[name] = tuple(check(f"{name_key}[{i}]", v) for i, v in enumerate(values))
        if len(set(checked[name])) < len(values):  # a grid would run the same trial twice
            raise ParamsError(f"{name_key}: lists a value more than once: {values!r}")
    return checked


@dataclass(frozen=True)
class TuneParams(_Section):
    """The search: method, budget and space."""

    SECTION = "tune"
    CHECKS = {
        "method": _one_of(TUNE_METHODS),
        "max_trials": _int_in(low=1),
        "halving_factor": _int_in(low=2),
        "min_resource_fraction": _float_in(0.0, 1.0, low_open=True),
        "seed": _int_in(low=0),
        "space": check_space,
    }
    method: str
    max_trials: int
    halving_factor: int
    min_resource_fraction: float
    seed: int
    space: Mapping[str, tuple]

    def _check_together(self):
        too_large = self.min_resource_fraction * self.halving_factor > 1 + 1e-9
        if self.method == "halving" and too_large:
            raise ParamsError(
                f"tune.min_resource_fraction: must be <= 1/halving_factor "
                f"({1 / self.halving_factor:.3g}) so that halving has a round on less data, "
                f"got {self.min_resource_fraction}")
        return self


@dataclass(frozen=True)
class EvaluateParams(_Section):
    """How the test split is scored."""

    SECTION = "evaluate"
    batch_size: int = int_in(low=1)
    top_k: int = int_in(1, 9)


@dataclass(frozen=True)
class VisualizeParams(_Section):
    """What the figures show."""

    SECTION = "visualize"
    samples_per_class: int = int_in(1, 20)
    gallery_size: int = int_in(1, 100)
    dpi: int = int_in(30, 600)
