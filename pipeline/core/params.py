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
from typing import Any, Callable, Mapping, get_type_hints

import yaml

from pipeline.core.errors import ParamsError

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"

SOURCES = ("auto", "local", "official", "debian", "npm")
NORMALIZATIONS = ("scale", "standardize")
ACTIVATIONS = ("relu", "elu", "gelu", "selu", "swish", "tanh")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")
TUNE_SAMPLERS = ("tpe", "random", "grid")
TUNE_PRUNERS = ("asha", "median", "none")


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


def float_in(low, high, low_open=False, high_open=False) -> Any:
    return rule(lambda key, v: check_float(key, v, low, high, low_open=low_open,
                                           high_open=high_open))


def int_in(low=None, high=None) -> Any:
    return rule(lambda key, v: check_int(key, v, low, high))


def one_of(choices) -> Any:
    return rule(lambda key, v: check_choice(key, v, choices))


class _Section:
    """A frozen dataclass built from one params.yaml section; each field carries its rule."""

    SECTION = ""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def checks(cls) -> dict[str, Callable[[str, Any], Any]]:
        """Field name -> its rule."""
        return {f.name: f.metadata["check"] for f in fields(cls)}

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
    optimizer: str = one_of(OPTIMIZERS)  # pipeline/training/model.py builds each (a test ties them)
    learning_rate: float = float_in(0.0, 10.0, low_open=True)
    lr_schedule: str = one_of(LR_SCHEDULES)
    batch_size: int = int_in(1, 65536)
    epochs: int = int_in(1, 10000)
    early_stopping_patience: int = int_in(low=0)
    seed: int = int_in(low=0)


# --- the tune section: a search space over every model and train setting -----------------

# What a trial needs: every model and train setting; tune.seed stands for train.seed.
SEARCHABLE: dict[str, type[_Section]] = {
    **{name: ModelParams for name in ModelParams.field_names()},
    **{name: TrainParams for name in TrainParams.field_names() if name != "seed"},
}
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


def parse_layers(key: str, value: Any) -> tuple[int, ...]:
    """Hidden layers written '512-256' (or 512 for one layer): a string, so that a list
    in params.yaml always means choices and Optuna can store the choice."""
    text = str(value) if _is_int(value) else value
    if not isinstance(text, str) or not all(p.strip().isdigit() for p in text.split("-")):
        raise ParamsError(f"{key}: must be layer widths such as '512-256' (or one integer), "
                          f"got {value!r}")
    return check_units(key, [int(p) for p in text.split("-")])


def setting_value(name: str, value: Any, key: str) -> Any:
    """A space value as the model/train setting `name` takes it, checked."""
    if name == "hidden_units":
        value = parse_layers(key, value)
    return SEARCHABLE[name].checks()[name](key, value)


def _setting_type(name: str) -> type:
    return get_type_hints(SEARCHABLE[name])[name]


def check_range(key: str, name: str, spec: dict) -> Range:
    kind = _setting_type(name)
    if kind not in (int, float):
        raise ParamsError(f"{key}: a range needs a numeric setting; give a list of choices or "
                          f"one value")
    for part in spec:
        if part not in RANGE_KEYS:
            raise ParamsError(f"{key}.{part}: unknown key in a range (known: "
                              f"{', '.join(RANGE_KEYS)})")
    for part in ("low", "high"):
        if part not in spec:
            raise ParamsError(f"{key}.{part}: missing; a range is {{low: .., high: .., "
                              f"log: true|false}}")
    low = setting_value(name, spec["low"], f"{key}.low")
    high = setting_value(name, spec["high"], f"{key}.high")
    log = check_bool(f"{key}.log", spec.get("log", False))
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


def check_space(key: str, space: Any) -> dict[str, SpaceEntry]:
    """Every setting a trial needs, each a range, choices or a fixed value; nothing else."""
    if not isinstance(space, dict):
        raise ParamsError(f"{key}: must be a mapping of model/train setting -> range, list of "
                          f"choices or one value, got {space!r}")
    for name in space:
        if name not in SEARCHABLE:
            close = difflib.get_close_matches(str(name), list(SEARCHABLE), n=1)
            hint = f"did you mean {key}.{close[0]}?" if close else \
                f"known: {', '.join(SEARCHABLE)}"
            raise ParamsError(f"{key}.{name}: unknown key, not a model or train setting; {hint}")
    for name in SEARCHABLE:
        if name not in space:
            raise ParamsError(f"{key}.{name}: missing; the tune section lists every setting a "
                              f"trial needs (a range, a list of choices or one value)")
    return {name: check_space_entry(f"{key}.{name}", name, value)
            for name, value in space.items()}


def smallest(entry: SpaceEntry) -> Any:
    if isinstance(entry, Range):
        return entry.low
    return min(entry.values) if isinstance(entry, Choices) else entry.value


@dataclass(frozen=True)
class TuneParams(_Section):
    """The search: its size, sampler, pruner, seed and space."""

    SECTION = "tune"
    n_trials: int = int_in(1, 100_000)
    sampler: str = one_of(TUNE_SAMPLERS)
    startup_trials: int = int_in(low=0)
    pruner: str = one_of(TUNE_PRUNERS)
    min_epochs: int = int_in(low=1)
    reduction_factor: int = int_in(low=2)
    seed: int = int_in(0, 2**31 - 1)
    space: Mapping[str, SpaceEntry] = rule(check_space)

    def _check_together(self):
        for name, entry in self.space.items():
            if self.sampler == "grid" and isinstance(entry, Range):
                raise ParamsError(f"tune.space.{name}: the grid sampler needs a list of values, "
                                  f"not a range")
        fewest_epochs = smallest(self.space["epochs"])
        if self.pruner != "none" and self.min_epochs >= fewest_epochs:
            raise ParamsError(f"tune.min_epochs: must be below the epochs of every trial "
                              f"({fewest_epochs} in tune.space.epochs), or nothing is pruned; "
                              f"got {self.min_epochs}")
        return self

    @property
    def searched(self) -> list[str]:
        return [name for name, entry in self.space.items() if not isinstance(entry, Fixed)]


def trial_settings(values: Mapping[str, Any], seed: int) -> tuple[ModelParams, TrainParams]:
    """A trial's model and train settings from the space values it drew."""
    def build(cls, **extra):
        return cls(**{name: setting_value(name, values[name], f"tune.space.{name}")
                      for name in cls.field_names() if name not in extra},
                   **extra)._check_together()

    return build(ModelParams), build(TrainParams, seed=seed)


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


# --- the ablation: the baseline with one knob changed at a time, over seeds ---------------


def check_variants(key: str, value: Any) -> tuple[Mapping[str, Any], ...]:
    """A list of overrides of the baseline's model/train settings, each checked by that
    setting's own rule; seeds and epochs come from the ablation section itself."""
    if not isinstance(value, list) or not value:
        raise ParamsError(f"{key}: must be a non-empty list of overrides such as "
                          f"{{dropout: 0.0}}, got {value!r}")
    seen = []
    for i, overrides in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(overrides, dict) or not overrides:
            raise ParamsError(f"{where}: must be a mapping of model/train setting -> value, "
                              f"such as {{dropout: 0.0}}; got {overrides!r}")
        for name, setting in overrides.items():
            if name not in SEARCHABLE:
                close = difflib.get_close_matches(str(name), list(SEARCHABLE), n=1)
                hint = f"did you mean {close[0]}?" if close else \
                    f"known: {', '.join(SEARCHABLE)}"
                raise ParamsError(f"{where}.{name}: unknown key; {hint}")
            SEARCHABLE[name].checks()[name](f"{where}.{name}", setting)
        if overrides in seen:
            raise ParamsError(f"{where}: the same overrides as {key}[{seen.index(overrides)}]")
        seen.append(overrides)
    return tuple(value)


def check_seeds(key: str, value: Any) -> tuple[int, ...]:
    """Distinct training seeds, at least two: an interval over seeds needs a spread."""
    if not isinstance(value, list) or len(value) < 2:
        raise ParamsError(f"{key}: must be a list of at least 2 seeds (an interval over "
                          f"seeds needs two), got {value!r}")
    seeds = tuple(check_int(f"{key}[{i}]", seed, 0, 2**31 - 1) for i, seed in enumerate(value))
    if len(set(seeds)) < len(seeds):
        raise ParamsError(f"{key}: lists a seed more than once: {value!r}")
    return seeds


@dataclass(frozen=True)
class AblationParams(_Section):
    """Which variants of the baseline the ablate stage trains, with which seeds and epochs."""

    SECTION = "ablation"
    variants: tuple[Mapping[str, Any], ...] = rule(check_variants)
    seeds: tuple[int, ...] = rule(check_seeds)
    epochs: int = int_in(1, 10000)  # every run's, unless a variant sets its own
