"""The model registry in dvc.yaml and the names predict takes from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from dvc.repo.artifacts import check_name_format

from pipeline.core import registry
from tests.support import ROOT

DVC_FILE = ROOT / "dvc.yaml"


def test_every_registered_model_is_a_stage_output_with_metadata():
    artifacts = registry.artifacts(DVC_FILE)
    assert set(artifacts) == {"baseline", "tuned", "tuned-savedmodel"}
    for name, entry in artifacts.items():
        check_name_format(name)  # DVC's own rule for artifact names
        assert entry["type"] == "model" and entry["desc"] and entry["labels"], name
        assert registry.producing_stage(entry["path"], DVC_FILE) is not None, name
    assert registry.producing_stage("models/tuned_savedmodel", DVC_FILE) == "export"


def test_names_resolve_to_registered_paths_and_anything_else_is_a_path():
    assert registry.resolve("tuned", DVC_FILE) == Path("models/tuned.keras")
    assert registry.resolve("tuned-savedmodel", DVC_FILE) == Path("models/tuned_savedmodel")
    assert registry.resolve("elsewhere/my.keras", DVC_FILE) == Path("elsewhere/my.keras")


@pytest.mark.parametrize("path, stage", [
    ("models/baseline.keras", "train"),
    ("data/prepared/data_card.json", "prepare"),  # a file inside an output folder
    ("models/other.keras", None),
])
def test_the_stage_that_produces_a_path(path, stage):
    assert registry.producing_stage(path, DVC_FILE) == stage


def test_a_missing_output_names_the_commands_that_produce_it(tmp_path):
    message = str(registry.missing_artifact("models/tuned.keras", DVC_FILE))
    assert message == ("models/tuned.keras: not found; `dvc repro tune` produces it, or "
                       "`dvc pull models/tuned.keras` fetches it from the project's DVC remote")
    assert str(registry.missing_artifact("x.keras", DVC_FILE)) == "x.keras: not found"
    outside = str(registry.missing_artifact("tuned", tmp_path / "dvc.yaml"))
    assert outside.startswith("tuned: not found (and no ") and "project's root folder" in outside
