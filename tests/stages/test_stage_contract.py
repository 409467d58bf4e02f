"""Static checks that dvc.yaml tells DVC the whole truth about each stage.

A stage that reads a param or imports code its dvc.yaml entry does not declare is a
silent reproducibility bug: change that key or file and DVC would not rerun the stage.
These tests read the stage modules' source (no execution) and fail loudly on that.
"""

from __future__ import annotations

import ast
import dataclasses

import pytest
import yaml

from pipeline.core import params
from pipeline.core.modules import imported_closure, is_plumbing, module_file, project_imports
from pipeline.tuning import space
from tests.support import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = sorted(DVC["stages"])
PARAM_CLASSES = {name: cls for module in (params, space) for name, cls in vars(module).items()
                 if isinstance(cls, type) and dataclasses.is_dataclass(cls)
                 and hasattr(cls, "SECTION")}

# The subpackages' __init__.py files hold a docstring only (a test below holds that).
SUBPACKAGE_INITS = {str(p.relative_to(ROOT)) for p in (ROOT / "pipeline").glob("*/__init__.py")}


@pytest.mark.parametrize("init", sorted(SUBPACKAGE_INITS))
def test_a_subpackage_init_holds_its_docstring_only(init):
    body = ast.parse((ROOT / init).read_text()).body
    assert len(body) == 1 and isinstance(body[0].value, ast.Constant), init


def tree_of(name: str) -> ast.Module:
    return ast.parse(module_file(name).read_text())


def stage_module(stage: str) -> str:
    cmd = DVC["stages"][stage]["cmd"]
    assert cmd == f"python -m pipeline.{stage}", f"{stage}: unexpected cmd {cmd!r}"
    return f"pipeline.{stage}"


def declared(stage: str) -> set[str]:
    return set(DVC["stages"][stage].get("params") or [])


def is_declared(key: str, keys: set[str]) -> bool:
    return key in keys or key.split(".")[0] in keys


def overridden(call: ast.Call) -> set[str]:
    """The fields a from_params call takes from its overrides (a dict literal) instead of
    params.yaml: `TrainParams.from_params(stage, {"seed": ...})` does not read train.seed."""
    given = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "overrides"), None)
    if not isinstance(given, ast.Dict):
        return set()
    return {k.value for k in given.keys if isinstance(k, ast.Constant)}


def fields_read(stage: str) -> dict[type, set[str]]:
    """Param class -> the fields its from_params calls in the stage's own module read."""
    used: dict[type, set[str]] = {}
    for node in ast.walk(tree_of(stage_module(stage))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "from_params":
            target = node.func.value
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name in PARAM_CLASSES:
                cls = PARAM_CLASSES[name]
                used.setdefault(cls, set()).update(set(cls.field_names()) - overridden(node))
    return used


def keys_read(stage: str) -> set[str]:
    """Every params.yaml key the stage's module reads through the typed param classes,
    plus any literal 'section.key' string it passes around."""
    keys = {f"{cls.SECTION}.{name}" for cls, names in fields_read(stage).items()
            for name in names}
    sections = {cls.SECTION for cls in PARAM_CLASSES.values()}
    for node in ast.walk(tree_of(stage_module(stage))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            head, _, tail = node.value.partition(".")
            if head in sections and tail.isidentifier():
                keys.add(node.value)
    return keys


@pytest.mark.parametrize("stage", STAGES)
def test_stage_loads_its_own_params(stage):
    calls = [node for node in ast.walk(tree_of(stage_module(stage)))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr == "load" and getattr(node.func.value, "id", "") == "params"]
    assert [ast.literal_eval(call.args[0]) for call in calls] == [stage]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_reads_only_declared_params(stage):
    undeclared = sorted(k for k in keys_read(stage) if not is_declared(k, declared(stage)))
    assert not undeclared, f"{stage} reads {undeclared} but dvc.yaml does not declare them"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_declares_no_param_it_does_not_read(stage):
    read = keys_read(stage)
    unused = sorted(entry for entry in declared(stage)
                    if not any(k == entry or k.startswith(entry + ".") for k in read))
    assert not unused, f"{stage} declares {unused} but never reads them (needless reruns)"


def test_tune_declares_its_own_section_only():
    """tune.space lists every model/train setting a trial needs, so a train.* or model.*
    change (the baseline's) never reruns tune."""
    assert declared("tune") == {"tune"}


STAGE_MODULES = {stage_module(stage) for stage in STAGES}


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage):
    """A stage that imported another would rerun on the other's every edit, and tie two
    entry points' code together; what they share lives in a small common module."""
    others = imported_closure(stage_module(stage)) & STAGE_MODULES - {stage_module(stage)}
    assert not others, f"{stage} imports the stage module(s) {sorted(others)}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_depends_on_all_code_it_imports(stage):
    code = {str(module_file(m).relative_to(ROOT)) for m in imported_closure(stage_module(stage))
            if not is_plumbing(m)}
    deps = set(DVC["stages"][stage].get("deps") or [])
    missing = sorted(code - deps)
    assert not missing, f"{stage} imports {missing}, which dvc.yaml does not list as deps"


def test_tunes_study_name_changes_only_with_code_that_reruns_tune():
    """The study's name digests the trial's code: each of those files is a dep of tune, so
    an edit that starts a new study also reruns the stage, and a plumbing edit does
    neither."""
    from pipeline.tuning import objective

    files = {str(path.relative_to(ROOT)) for path in objective.trial_code()}
    assert {"pipeline/tuning/objective.py", "pipeline/training/fitting.py",
            "pipeline/data/prepared.py"} <= files
    assert files <= set(DVC["stages"]["tune"]["deps"])
    assert not [f for f in files if f.startswith("pipeline/core/") or f.endswith("__init__.py")]


# --- the layout's import rules (docs/architecture.md) --------------------------------

ALL_MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "pipeline").rglob("*.py"))
TOP_MODULES = {m for m in ALL_MODULES if m.count(".") == 1 and not module_file(m).name
               == "__init__.py"}  # the stages and the predict tool
LIBRARIES = sorted({m.split(".")[1] for m in ALL_MODULES if m.count(".") >= 1} - {
    m.split(".")[1] for m in TOP_MODULES})


def layer(module: str) -> str:
    """'entry' (a stage or the predict tool), a library's name, 'core' or 'package'."""
    if module == "pipeline":
        return "package"
    return "entry" if module in TOP_MODULES else module.split(".")[1]


def test_the_layers_are_what_the_docs_say():
    assert {stage_module(s) for s in STAGES} <= TOP_MODULES == STAGE_MODULES | {
        "pipeline.predict"}
    assert LIBRARIES == ["ablation", "core", "data", "reporting", "serving", "training", "tuning"]


@pytest.mark.parametrize("module", [m for m in ALL_MODULES if layer(m) != "entry"])
def test_no_library_imports_a_stage(module):
    entries = sorted(m for m in project_imports(module) if layer(m) == "entry")
    assert not entries, f"{module} imports the entry point(s) {entries}"


@pytest.mark.parametrize("module", [m for m in ALL_MODULES if layer(m) in ("core", "package")])
def test_core_and_the_package_constants_import_nothing_outside_core(module):
    allowed = {"core"} if layer(module) == "core" else set()
    outside = sorted(m for m in project_imports(module) if layer(m) not in allowed
                     and m != "pipeline.core")
    assert not outside, f"{module} imports {outside}"


def test_the_libraries_import_each_other_without_a_cycle():
    uses = {lib: set() for lib in LIBRARIES}
    for module in ALL_MODULES:
        if layer(module) in uses:
            uses[layer(module)] |= {layer(m) for m in project_imports(module)
                                    if layer(m) in uses and layer(m) != layer(module)}
    done: list[str] = []
    while len(done) < len(uses):  # peel off the libraries whose imports are all done
        ready = sorted(lib for lib in uses if lib not in done and uses[lib] <= set(done))
        assert ready, f"the libraries import each other in a cycle: " \
                      f"{ {lib: sorted(uses[lib]) for lib in uses if lib not in done} }"
        done += ready
