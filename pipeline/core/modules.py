"""The project's own modules a module imports, read from their source with ast: the code
a result depends on, found the same way whether or not those modules are loaded yet.
Hand-written: the standard library's modulefinder runs no faster and also follows every
third-party import, which the project's digests and layout rules do not want."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the pipeline package
PACKAGE = "pipeline"
CORE = f"{PACKAGE}.core"


def module_file(name: str) -> Path:
    """A module's file; a package's is its __init__.py."""
    path = ROOT / name.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def is_plumbing(name: str) -> bool:
    """Code that cannot change what a stage computes: core (error types, logging, atomic
    renames, params validation, which accepts or refuses a value but never alters one,
    the artifact paths, which dvc.yaml spells too, this module) and the packages'
    __init__ files (the dataset's constants, docstrings). dvc.yaml lists none of it as a
    stage's deps, and tune's code digest leaves it out: an edit of a message reruns
    nothing."""
    return name == CORE or name.startswith(CORE + ".") or module_file(name).name == "__init__.py"


def project_imports(name: str) -> set[str]:
    """Modules of the project that `name` imports anywhere in its code (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(module_file(name).read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGE + ".")}
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
            found.add(node.module)  # `from package import module` imports both
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if module_file(f"{node.module}.{a.name}").is_file()}
    return found


def imported_closure(name: str) -> set[str]:
    """`name` and every project module it imports, directly or not."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(project_imports(current))
    return seen
