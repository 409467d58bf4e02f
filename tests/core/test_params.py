"""params.yaml validation: every bad value is refused with a message naming its key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core import params
from pipeline.core.errors import ParamsError
from pipeline.tuning import space
from tests.conftest import DELETE, set_params
from tests.support import ROOT

STAGES = ("fetch", "prepare", "train", "tune", "evaluate", "ablate", "visualize", "report")


@pytest.fixture(autouse=True)
def in_project(project, monkeypatch):
    """Stages read params.yaml and dvc.yaml from the folder they run in."""
    monkeypatch.chdir(project)


def set_param(key, value):
    set_params(Path.cwd(), {key: value})


SECTION_CLASSES = {
    "fetch": [params.FetchParams], "prepare": [params.PrepareParams],
    "train": [params.ModelParams, params.TrainParams], "evaluate": [params.EvaluateParams],
    "visualize": [params.VisualizeParams], "ablate": [params.AblationParams],
}


@pytest.mark.parametrize("stage", sorted(SECTION_CLASSES))
def test_committed_params_are_valid_for_every_stage(project, stage):
    stage_params = params.load(stage)
    for cls in SECTION_CLASSES[stage]:
        assert cls.from_params(stage_params) is not None


def test_committed_tune_section_is_valid(project):
    tune = space.TuneParams.from_params(params.load("tune"))
    assert tune.space, "the default search space must not be empty"


@pytest.mark.parametrize("stage, cls, key, value, message", [
    ("train", params.TrainParams, "train.learning_rate", -0.1, "must be > 0.0, got -0.1"),
    ("train", params.TrainParams, "train.learning_rate", "fast", "must be a number, got 'fast'"),
    ("train", params.TrainParams, "train.batch_size", 0, "must be >= 1, got 0"),
    ("train", params.TrainParams, "train.epochs", 2.5, "must be an integer, got 2.5"),
    ("train", params.TrainParams, "train.epochs", True, "must be an integer, got True"),
    ("train", params.TrainParams, "train.learning_rate", True, "must be a number, got True"),
    ("train", params.TrainParams, "train.optimizer", "adagrad", "must be one of adam, adamw"),
    ("train", params.TrainParams, "train.lr_schedule", "step", "must be one of constant, cosine"),
    ("train", params.ModelParams, "model.dropout", 1.0, "must be < 1.0, got 1.0"),
    ("train", params.ModelParams, "model.dropout", -0.1, "must be >= 0.0, got -0.1"),
    ("train", params.ModelParams, "model.hidden_units", [], "must be a non-empty list"),
    ("train", params.ModelParams, "model.hidden_units", [64, 0], None),
    ("train", params.ModelParams, "model.activation", "sigmoidish", "must be one of relu"),
    ("train", params.ModelParams, "model.batch_norm", "yes", "must be true or false"),
    ("prepare", params.PrepareParams, "data.val_fraction", 0, "must be > 0.0, got 0.0"),
    ("prepare", params.PrepareParams, "data.val_fraction", 1, "must be < 1.0, got 1.0"),
    ("prepare", params.PrepareParams, "data.normalize", "minmax", "must be one of scale, "),
    ("fetch", params.FetchParams, "data.source", "kaggle",
     "must be one of auto, local, official, debian, npm; got 'kaggle'"),
    ("evaluate", params.EvaluateParams, "evaluate.top_k", 0, "must be >= 1, got 0"),
    ("visualize", params.VisualizeParams, "visualize.dpi", 5, "must be >= 30, got 5"),
])
def test_invalid_values_are_refused_naming_the_key(project, stage, cls, key, value, message):
    set_param(key, value)
    with pytest.raises(ParamsError) as caught:
        cls.from_params(params.load(stage))
    shown_key = "model.hidden_units[1]" if value == [64, 0] else key
    assert str(caught.value).startswith(f"{shown_key}: ")
    if message:
        assert message in str(caught.value)


def test_local_source_needs_a_folder(project):
    set_param("data.source", "local")
    with pytest.raises(ParamsError, match="^data.local_dir: must name a folder"):
        params.FetchParams.from_params(params.load("fetch"))


def test_missing_key_is_named(project):
    set_param("train.epochs", DELETE)
    with pytest.raises(ParamsError, match=r"^train.epochs: missing from params.yaml$"):
        params.TrainParams.from_params(params.load("train"))


def test_unknown_key_is_refused_as_a_likely_typo(project):
    set_param("train.learnig_rate", 0.1)
    with pytest.raises(ParamsError, match=r"^train.learnig_rate: unknown key; did you mean "
                                          r"train.learning_rate\?$"):
        params.TrainParams.from_params(params.load("train"))


def typo(name):
    return name + name[-1]  # 'seed' -> 'seedd'


# Every section of params.yaml, and a key of each: taken from the params classes, so a
# section added or rewritten later is covered too.
SECTION_KEYS = sorted((section, sorted(keys)[0]) for section, keys in params.known_keys().items())


@pytest.mark.parametrize("section, key", SECTION_KEYS, ids=[s for s, _ in SECTION_KEYS])
@pytest.mark.parametrize("stage", STAGES)
def test_a_typo_in_any_section_stops_every_stage(project, section, key, stage):
    set_param(f"{section}.{typo(key)}", 1)
    with pytest.raises(ParamsError) as caught:
        params.load(stage)
    assert str(caught.value) == (f"{section}.{typo(key)}: unknown key; "
                                 f"did you mean {section}.{key}?")


def test_the_issues_example_names_the_key_and_the_valid_one(project):
    set_param("data.val_fractoin", 0.3)
    with pytest.raises(ParamsError) as caught:
        params.load("fetch")  # fetch declares data.source and data.local_dir only
    assert str(caught.value) == ("data.val_fractoin: unknown key; "
                                 "did you mean data.val_fraction?")


def test_a_key_in_the_wrong_section_points_to_the_right_one(project):
    set_param("data.learning_rate", 0.1)
    with pytest.raises(ParamsError, match=r"^data.learning_rate: unknown key; did you mean "
                                          r"train.learning_rate\?$"):
        params.load("prepare")


def test_an_unknown_key_without_a_close_match_lists_the_sections_keys(project):
    set_param("evaluate.zzz", 1)
    with pytest.raises(ParamsError, match=r"^evaluate.zzz: unknown key; known: batch_size, "
                                          r"top_k$"):
        params.load("evaluate")


def test_a_numeric_key_is_refused_as_unknown_not_with_a_traceback(project):
    data = yaml.safe_load(Path("params.yaml").read_text())
    data["evaluate"][7] = 1  # YAML reads `7: 1` as an integer key
    Path("params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"^evaluate.7: unknown key; known: batch_size, "
                                          r"top_k$"):
        params.load("evaluate")


def test_an_unknown_section_is_refused(project):
    set_param("trian.epochs", 3)
    with pytest.raises(ParamsError, match=r"^trian: unknown section; did you mean train\?$"):
        params.load("visualize")


def test_known_keys_are_the_params_classes_fields(project):
    known = params.known_keys()
    assert known["data"] == {"source", "local_dir", "val_fraction", "seed", "normalize"}
    assert known["model"] == set(params.ModelParams.field_names())
    committed = yaml.safe_load(Path("params.yaml").read_text())
    assert set(committed) == set(known)  # every section of the committed file is known


def test_reading_an_undeclared_key_fails_loudly(project):
    stage = params.load("prepare")
    with pytest.raises(ParamsError, match=r"^train.seed: stage 'prepare' reads this key but "
                                          r"dvc.yaml does not declare it"):
        stage.get("train.seed")


def test_tune_cannot_read_the_keys_it_searches_from_train(project):
    stage = params.load("tune")
    with pytest.raises(ParamsError, match="^train.learning_rate: stage 'tune' reads this key"):
        stage.get("train.learning_rate")


@pytest.mark.parametrize("change, message", [
    ({"learning_rate": []}, r"^tune.space.learning_rate: an empty list of choices"),
    ({"learning_rate": [0.01, -1]}, r"^tune.space.learning_rate\[1\]: must be > 0.0, got -1"),
    ({"learning_rate": {"low": 0.01, "high": 0.001}},
     r"^tune.space.learning_rate: low \(0.01\) must not exceed high \(0.001\)"),
    ({"momentum": [0.9]}, r"^tune.space.momentum: unknown key, not a model or train setting; "
                          r"known: hidden_units, "),
    ({"hidden_units": ["64", "0"]}, r"^tune.space.hidden_units\[1\]\[0\]: must be >= 1"),
])
def test_invalid_search_spaces_are_refused_naming_the_key(project, change, message):
    data = yaml.safe_load(Path("params.yaml").read_text())
    data["tune"]["space"].update(change)
    Path("params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=message):
        space.TuneParams.from_params(params.load("tune"))


def test_a_search_space_that_is_not_a_mapping_is_refused(project):
    set_param("tune.space", [0.1, 0.2])
    with pytest.raises(ParamsError, match=r"^tune.space: must be a mapping of model/train"):
        space.TuneParams.from_params(params.load("tune"))


def test_invalid_yaml_names_the_file_and_line(project):
    Path("params.yaml").write_text("data:\n  source: auto\n  seed: [1, 2\n")
    with pytest.raises(ParamsError, match=r"^params.yaml: line \d+ is not valid YAML"):
        params.load("fetch")


def run_stage(module, cwd):
    """The stage of this checkout (not an installed copy), run in `cwd`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def test_an_unknown_key_stops_a_stage_with_one_line(project):
    set_param("data.val_fractoin", 0.3)
    result = run_stage("pipeline.evaluate", project)
    assert result.returncode == 1
    assert result.stderr.strip() == ("evaluate: error: data.val_fractoin: unknown key; "
                                     "did you mean data.val_fraction?")


def test_a_failed_fetch_says_how_to_get_the_last_good_data_back(project):
    set_param("data.source", "local")
    set_param("data.local_dir", str(project / "absent"))
    result = run_stage("pipeline.fetch", project)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"fetch: error: {project / 'absent'}: no such folder; "
                                     "to get the last good data back: dvc checkout data/raw")


def test_a_stage_with_bad_params_stops_with_one_line_and_no_output(project):
    set_param("train.learning_rate", -0.001)
    result = run_stage("pipeline.train", project)
    assert result.returncode == 1
    assert result.stderr.strip() == ("train: error: train.learning_rate: must be > 0.0, "
                                     "got -0.001")
    assert not (project / "models").exists() and not (project / "reports").exists()


# --- the ablation section ----------------------------------------------------------------


def ablation_settings():
    return params.AblationParams.from_params(params.load("ablate"))


def test_committed_ablation_lists_the_knobs_of_the_study(project):
    ablation = ablation_settings()
    changed = {key for variant in ablation.variants for key in variant}
    assert {"dropout", "batch_norm", "learning_rate", "batch_size", "epochs"} <= changed
    assert len(ablation.seeds) >= 3


def test_an_unknown_variant_key_is_refused_naming_it_and_the_valid_one(project):
    variants = yaml.safe_load(Path("params.yaml").read_text())["ablation"]["variants"]
    variants[2] = {"dropuot": 0.0}
    set_param("ablation.variants", variants)
    with pytest.raises(ParamsError) as caught:
        ablation_settings()
    assert str(caught.value) == "ablation.variants[2].dropuot: unknown key; did you mean dropout?"


@pytest.mark.parametrize("key, value, message", [
    ("ablation.variants", [{"dropout": 1.5}],
     "ablation.variants[0].dropout: must be < 1.0, got 1.5"),
    ("ablation.variants", [{"batch_size": 32}, {"batch_norm": "no"}],
     "ablation.variants[1].batch_norm: must be true or false, got 'no'"),
    ("ablation.variants", [{"seed": 3}],
     "ablation.variants[0].seed: unknown key; known: hidden_units, activation, dropout, "
     "batch_norm, l2, optimizer, learning_rate, lr_schedule, batch_size, epochs, "
     "early_stopping_patience"),
    ("ablation.variants", [{"dropout": 0.0}, {"dropout": 0.0}],
     "ablation.variants[1]: the same overrides as ablation.variants[0]"),
    ("ablation.variants", [{}], "ablation.variants[0]: must be a mapping of model/train "
                                "setting -> value, such as {dropout: 0.0}; got {}"),
    ("ablation.variants", [], "ablation.variants: must be a non-empty list of overrides"),
    ("ablation.seeds", [0], "ablation.seeds: must be a list of at least 2 seeds"),
    ("ablation.seeds", [1, 1], "ablation.seeds: lists a seed more than once: [1, 1]"),
    ("ablation.seeds", [0, -1], "ablation.seeds[1]: must be >= 0, got -1"),
    ("ablation.epochs", 0, "ablation.epochs: must be >= 1, got 0"),
])
def test_invalid_ablation_settings_are_refused_naming_the_key(project, key, value, message):
    set_param(key, value)
    with pytest.raises(ParamsError) as caught:
        ablation_settings()
    assert str(caught.value).startswith(message)
