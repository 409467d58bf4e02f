"""The models registered in dvc.yaml's `artifacts:` section, by name, and the command
that remakes any pipeline output.

dvc.yaml is where the model names, their paths and the stages that write them are
declared for DVC (`dvc artifacts get`, DVC's model registry); tools that take a model
name, and the errors that name the command rebuilding a missing or damaged file, read
them from there instead of keeping a second list.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.params import DVC_FILE, read_yaml


def artifacts(dvc_file: str | Path = DVC_FILE) -> dict[str, dict]:
    return read_yaml(dvc_file).get("artifacts") or {}


def project_path(path: str | Path, dvc_file: str | Path = DVC_FILE) -> Path:
    """path as dvc.yaml spells it: relative to the project root (dvc.yaml's folder)."""
    path, root = Path(path), Path(dvc_file).absolute().parent
    return path.relative_to(root) if path.is_absolute() and path.is_relative_to(root) else path


def producing_stage(path: str | Path, dvc_file: str | Path = DVC_FILE) -> str | None:
    """The stage with `path` among its outs, or inside an out folder; None if no stage."""
    target = project_path(path, dvc_file)
    for name, stage in (read_yaml(dvc_file).get("stages") or {}).items():
        for out in stage.get("outs") or []:
            out_path = Path(next(iter(out)) if isinstance(out, dict) else out)
            if target == out_path or out_path in target.parents:
                return name
    return None


def missing_artifact(path: str | Path, dvc_file: str | Path = DVC_FILE) -> DataError:
    """The error for an absent pipeline output, naming the command that makes it."""
    if not Path(dvc_file).is_file():
        return DataError(f"{path}: not found (and no {dvc_file} here to look model names up "
                         f"in: run from the project's root folder)")
    stage = producing_stage(path, dvc_file)
    if stage is None:
        return DataError(f"{path}: not found")
    return DataError(f"{path}: not found; `dvc repro {stage}` produces it, or "
                     f"`dvc pull {project_path(path, dvc_file)}` fetches it from the "
                     "project's DVC remote")


def damaged_artifact(path: str | Path, problem: str,
                     dvc_file: str | Path = DVC_FILE) -> DataError:
    """The error for a pipeline output that exists but cannot be used (truncated,
    foreign, malformed): what is wrong, and the commands that replace it. A file DVC
    tracks and finds modified is replaced by `dvc pull` only with --force."""
    stage = producing_stage(path, dvc_file) if Path(dvc_file).is_file() else None
    if stage is None:
        return DataError(f"{path}: {problem}")
    return DataError(f"{path}: {problem}; `dvc repro {stage}` rebuilds it, or "
                     f"`dvc pull --force {project_path(path, dvc_file)}` fetches it again "
                     "from the project's DVC remote")


def resolve(model: str, dvc_file: str | Path = DVC_FILE) -> Path:
    """A registered artifact name -> its path; anything else is taken as a path."""
    registered = artifacts(dvc_file) if Path(dvc_file).is_file() else {}
    if model in registered:
        return Path(registered[model]["path"])
    return Path(model)
