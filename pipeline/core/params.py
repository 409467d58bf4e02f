"""Load params.yaml, restrict it to what a stage declares in dvc.yaml, and validate it.

This is the one module that knows the keys (the grammar of the tune section's search
space is pipeline/tuning/space.py's, built on the rules here). The rules are pydantic
types; a small formatter turns pydantic's errors into the project's one-line messages.
A stage calls `load(stage)` and can read only the keys its dvc.yaml entry lists under
`params:`; reading any other key fails loudly, because an undeclared read is a silent
reproducibility bug (DVC would not rerun the stage when that key changes). Every value
is checked here, before any long work, and a bad one raises ParamsError naming the key.
A key no stage knows (a typo) stops every stage, whichever keys that stage declares.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, get_type_hints

import pydantic
import yaml
from pydantic import BeforeValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from pipeline.core.errors import ParamsError

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"

# data.source: one of these, in the order 'auto' tries them (pipeline/data/sources.py)
AUTO = "auto"
SOURCES = ("local", "official", "debian", "npm")


# --- reading the files -------------------------------------------------------------


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text) or {}  # an empty file: no sections
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError(f"{path}:{where} is not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: must be a mapping of sections, got {type(data).__name__}")
    return data


def declared_params(stage: str, dvc_file: str | Path = DVC_FILE) -> list[str]:
    """The params.yaml keys that `stage` lists under `params:` in dvc.yaml."""
    stages = read_yaml(dvc_file).get("stages") or {}
    if stage not in stages:
        raise ParamsError(f"{dvc_file}: no stage named '{stage}'")
    keys = stages[stage].get("params") or []
    for entry in keys:
        if not isinstance(entry, str):  # {other_file.yaml: [keys]}: not used by this project
            raise ParamsError(f"{dvc_file}: stage '{stage}' reads params from {entry}; "
                              f"only {PARAMS_FILE} is supported")
    return keys


@dataclasses.dataclass(frozen=True)
class StageParams:
    """The slice of params.yaml one stage declared; reading outside it is an error."""

    stage: str
    values: Mapping[str, Any]
    declared: Collection[str]  # keys, or whole sections

    def get(self, key: str) -> Any:
        """Value of a dotted key such as 'train.learning_rate'."""
        section, _, name = key.partition(".")
        if key not in self.declared and section not in self.declared:
            raise ParamsError(f"{key}: stage '{self.stage}' reads this key but {DVC_FILE} does "
                              f"not declare it (add it to stages.{self.stage}.params)")
        block = self.values.get(section)
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
    """Section -> its keys, from the fields of the params classes (this module's, and
    pipeline/tuning/space.py's TuneParams, which extends TuneSettings)."""
    known: dict[str, set[str]] = {}
    todo = list(Section.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        known.setdefault(cls.SECTION, set()).update(cls.field_names())
    return known


def suggest(name: Any, known: Iterable[str], prefix: str = "") -> str:
    """'did you mean <prefix><the closest known name>?', else the known names.
    (Hand-written: pydantic names an unknown key but suggests none.)"""
    known = list(known)
    match = difflib.get_close_matches(str(name), known, n=1)
    return f"did you mean {prefix}{match[0]}?" if match else f"known: {', '.join(known)}"


def refuse_unknown_keys(values: Mapping[str, Any]) -> None:
    """Stop at the first section or key, in file order, that no params class has: a typo,
    most likely; the closest key of its section, else of any section, is suggested. A
    section that is not a mapping is left to StageParams.get, which names it.
    (Hand-written: a set lookup per key, where a pydantic schema of the file needs the
    same loop to rebuild the messages.)"""
    known = known_keys()
    owners = {key: other for other in sorted(known, reverse=True) for key in known[other]}
    for section, block in values.items():
        if section not in known:
            raise ParamsError(f"{section}: unknown section; {suggest(section, sorted(known))}")
        for name in block if isinstance(block, dict) else ():
            if name in known[section]:
                continue
            nearby = difflib.get_close_matches(str(name), known[section], n=1)
            elsewhere = difflib.get_close_matches(str(name), sorted(owners), n=1)
            hint = (f"did you mean {owners[elsewhere[0]]}.{elsewhere[0]}?" if elsewhere
                    and not nearby else suggest(name, sorted(known[section]), f"{section}."))
            raise ParamsError(f"{section}.{name}: unknown key; {hint}")


# --- the rules: pydantic types, and a formatter for the project's one-line messages ------

# pydantic's error type -> the message after "key: "; ctx and the value fill it in
MESSAGES = {
    "int_type": "must be an integer, got {input!r}",
    "float_type": "must be a number, got {input!r}",
    "bool_type": "must be true or false, got {input!r}",
    "string_type": "must be a string, got {input!r}",
    "literal_error": "must be one of {choices}; got {input!r}",
    "greater_than_equal": "must be >= {ge}, got {value}",
    "greater_than": "must be > {gt}, got {value}",
    "less_than_equal": "must be <= {le}, got {value}",
    "less_than": "must be < {lt}, got {value}",
}


def validate(rule: Any, value: Any, key: str) -> Any:
    """`value` checked by a pydantic type; the first refusal becomes one ParamsError,
    `key` followed by pydantic's location (.field, [i] for a list item). A bound written
    as a float shows the value as a float, as the rule compares it, and a Literal's
    choices are listed as params.yaml spells them."""
    try:
        return pydantic.TypeAdapter(rule).validate_python(value)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
    ctx, shown = error.get("ctx") or {}, error["input"]
    if isinstance(next(iter(ctx.values()), None), float) and not isinstance(shown, bool):
        shown = float(shown)
    choices = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
    template = MESSAGES.get(error["type"])  # none for a PydanticCustomError: msg is ours
    message = error["msg"] if template is None else template.format(
        **ctx, input=error["input"], value=shown, choices=choices)
    where = "".join(f"[{i}]" if isinstance(i, int) else f".{i}" for i in error["loc"])
    raise ParamsError(f"{key}{where}: {message}")


def _layer_list(value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not value:
        raise PydanticCustomError("layers", "must be a non-empty list of layer widths, "
                                            "got {value}", {"value": repr(value)})
    return value


Int = StrictInt
Number = StrictFloat  # an integer is a number too; true/false is not
Layers = Annotated[tuple[Annotated[StrictInt, Field(ge=1)], ...], BeforeValidator(_layer_list)]
Text = Annotated[StrictStr, BeforeValidator(lambda v: "" if v is None else v)]  # null: empty


class Section:
    """A frozen pydantic dataclass made from one params.yaml section: each field's type
    carries its rule, and a refused value becomes one ParamsError naming its key."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def plain(self) -> dict[str, Any]:
        """The settings as params.yaml spells them: lists for tuples."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def build(cls, values: Mapping[str, Any], prefix: str = ""):
        """The section from its values; a message names prefix.field (SECTION.field)."""
        return validate(cls, dict(values), prefix or cls.SECTION)

    @classmethod
    def check_value(cls, name: str, value: Any, key: str) -> Any:
        """One field's value checked by its rule alone (tune's space and the ablation)."""
        return validate(get_type_hints(cls, include_extras=True)[name], value, key)

    @classmethod
    def from_params(cls, params: StageParams, overrides: Mapping[str, Any] | None = None):
        """Every field from the stage's declared params (a missing key fails there), but
        those `overrides` sets: they are not read, so the stage need not declare them."""
        overrides = dict(overrides or {})
        return cls.build({name: overrides[name] if name in overrides
                          else params.get(f"{cls.SECTION}.{name}")
                          for name in cls.field_names()})


# --- typed params, one class per concern ---------------------------------------------

Source = Literal[(AUTO, *SOURCES)]
CONFIG = pydantic.ConfigDict(extra="forbid")  # a field no class has is refused, not dropped


@dataclass(frozen=True, config=CONFIG)
class FetchParams(Section):
    """Where the raw IDX files come from."""

    SECTION = "data"
    source: Source
    local_dir: Text

    @pydantic.model_validator(mode="after")
    def _local_needs_a_folder(self):
        if self.source == "local" and not self.local_dir:
            raise ParamsError("data.local_dir: must name a folder when data.source is 'local'")
        return self


@dataclass(frozen=True, config=CONFIG)
class PrepareParams(Section):
    """How the training set is split and the pixels normalized."""

    SECTION = "data"
    val_fraction: Annotated[Number, Field(gt=0.0, lt=1.0)]
    seed: Annotated[Int, Field(ge=0)]
    normalize: Literal["scale", "standardize"]


@dataclass(frozen=True, config=CONFIG)
class ModelParams(Section):
    """The feedforward network's shape and regularization."""

    SECTION = "model"
    hidden_units: Layers
    activation: Literal["relu", "elu", "gelu", "selu", "swish", "tanh"]
    dropout: Annotated[Number, Field(ge=0.0, lt=1.0)]
    batch_norm: StrictBool
    l2: Annotated[Number, Field(ge=0.0)]


OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")  # pipeline/training/model.py builds each


@dataclass(frozen=True, config=CONFIG)
class TrainParams(Section):
    """How the network is optimized."""

    SECTION = "train"
    optimizer: Literal[OPTIMIZERS]
    learning_rate: Annotated[Number, Field(gt=0.0, le=10.0)]
    lr_schedule: Literal["constant", "cosine"]
    batch_size: Annotated[Int, Field(ge=1, le=65536)]
    epochs: Annotated[Int, Field(ge=1, le=10000)]
    early_stopping_patience: Annotated[Int, Field(ge=0)]
    seed: Annotated[Int, Field(ge=0)]


@dataclass(frozen=True, config=CONFIG)
class TuneSettings(Section):
    """The tune section's settings but its search space: pipeline/tuning/space.py's
    TuneParams adds the space and its grammar (core imports nothing of tuning)."""

    SECTION = "tune"
    n_trials: Annotated[Int, Field(ge=1, le=100_000)]
    sampler: Literal["tpe", "random", "grid"]
    startup_trials: Annotated[Int, Field(ge=0)]
    pruner: Literal["asha", "median", "none"]
    min_complete: Annotated[Int, Field(ge=0)]
    min_epochs: Annotated[Int, Field(ge=1)]
    reduction_factor: Annotated[Int, Field(ge=2)]
    seed: Annotated[Int, Field(ge=0, le=2**31 - 1)]
    refit: StrictBool
    space: Any


@dataclass(frozen=True, config=CONFIG)
class EvaluateParams(Section):
    """How the test split is scored."""

    SECTION = "evaluate"
    batch_size: Annotated[Int, Field(ge=1)]
    top_k: Annotated[Int, Field(ge=1, le=9)]


@dataclass(frozen=True, config=CONFIG)
class VisualizeParams(Section):
    """What the figures show."""

    SECTION = "visualize"
    samples_per_class: Annotated[Int, Field(ge=1, le=20)]
    gallery_size: Annotated[Int, Field(ge=1, le=100)]
    dpi: Annotated[Int, Field(ge=30, le=600)]


# --- the ablation: the baseline with one knob changed at a time, over seeds ---------------

# A training run's configuration: every model and train setting but the seed (tune and
# the ablation give each run its seed), with the class whose rule checks each.
CONFIGURATION: dict[str, type[Section]] = {
    **{name: ModelParams for name in ModelParams.field_names()},
    **{name: TrainParams for name in TrainParams.field_names() if name != "seed"},
}


def check_variants(value: Any, key: str = "ablation.variants") -> tuple[Mapping[str, Any], ...]:
    """A list of overrides of the baseline's model/train settings, each checked by that
    setting's own rule. (Hand-written: the keys of a variant are the baseline's, so an
    unknown one is named as ablation.variants[i].key, which pydantic's loc cannot say.)"""
    if not isinstance(value, (list, tuple)) or not value:
        raise ParamsError(f"{key}: must be a non-empty list of overrides such as "
                          f"{{dropout: 0.0}}, got {value!r}")
    seen: list[Mapping[str, Any]] = []
    for i, overrides in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(overrides, dict) or not overrides:
            raise ParamsError(f"{where}: must be a mapping of model/train setting -> value, "
                              f"such as {{dropout: 0.0}}; got {overrides!r}")
        for name, setting in overrides.items():
            if name not in CONFIGURATION:
                raise ParamsError(f"{where}.{name}: unknown key; {suggest(name, CONFIGURATION)}")
            CONFIGURATION[name].check_value(name, setting, f"{where}.{name}")
        if overrides in seen:
            raise ParamsError(f"{where}: the same overrides as {key}[{seen.index(overrides)}]")
        seen.append(overrides)
    return tuple(value)


def check_seeds(value: Any, key: str = "ablation.seeds") -> tuple[int, ...]:
    """Distinct training seeds, at least two: an interval over seeds needs a spread."""
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise ParamsError(f"{key}: must be a list of at least 2 seeds (an interval over "
                          f"seeds needs two), got {value!r}")
    seeds = tuple(TrainParams.check_value("seed", seed, f"{key}[{i}]")
                  for i, seed in enumerate(value))
    if len(set(seeds)) < len(seeds):
        raise ParamsError(f"{key}: lists a seed more than once: {list(value)!r}")
    return seeds


@dataclass(frozen=True, config=CONFIG)
class AblationParams(Section):
    """Which variants of the baseline the ablate stage trains, with which seeds and epochs."""

    SECTION = "ablation"
    variants: Annotated[tuple[dict[str, Any], ...], BeforeValidator(check_variants)]
    seeds: Annotated[tuple[int, ...], BeforeValidator(check_seeds)]
    epochs: Annotated[Int, Field(ge=1, le=10000)]  # every run's, unless a variant sets its own
