"""The DVC contract, end to end, with real `dvc` commands in a temporary git repository.

The project is copied into a fresh repo, pointed at small generated IDX data (the
`local` source) with a reduced-size params profile, and driven with `dvc repro`,
`dvc status`, `dvc params diff`, `dvc metrics`, `dvc exp` and `dvc plots`. The tests
in this module share one repository and run in order: each starts from the state the
previous one committed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import set_params
from tests.support import ROOT
from tests.support.synthetic import write_idx_dataset

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ALL_STAGES = {"fetch", "prepare", "train", "tune", "export", "evaluate", "ablate", "visualize",
              "report"}
PROJECT_FILES = ("pipeline/", "params.yaml", "dvc.yaml", ".dvc/config", ".dvcignore",
                 ".gitignore", "pyproject.toml", "plots_page/")

# Small enough that the whole pipeline runs in well under a minute on 2 cores.
PROFILE = {
    "data": {"source": "local", "val_fraction": 0.2},
    "model": {"hidden_units": [32], "dropout": 0.1, "batch_norm": False},
    "train": {"epochs": 3, "batch_size": 32, "early_stopping_patience": 0,
              "learning_rate": 0.01},
    "tune": {"n_trials": 3, "sampler": "tpe", "startup_trials": 2, "pruner": "asha",
             "min_complete": 0, "min_epochs": 1, "reduction_factor": 2, "seed": 0,
             "refit": True, "space": {
                 "hidden_units": ["64", "32"], "activation": "relu",
                 "dropout": {"low": 0.0, "high": 0.2}, "batch_norm": False, "l2": 0.0,
                 "optimizer": "adam", "learning_rate": 0.01, "lr_schedule": "constant",
                 "batch_size": 32, "epochs": 2, "early_stopping_patience": 0}},
    "ablation": {"variants": [{"dropout": 0.0}], "seeds": [0, 1], "epochs": 2},
    "visualize": {"samples_per_class": 2, "gallery_size": 8, "dpi": 40},
}


def command_env() -> dict[str, str]:
    """This interpreter's dvc and python first on PATH, as the stages' `python` expects."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                PYTHONPATH="", DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2")


def run(cmd, cwd, check=True, timeout=900, **kwargs):
    result = subprocess.run(cmd, cwd=cwd, env=command_env(), capture_output=True, text=True,
                            timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def dvc(repo, *args, check=True):
    return run([str(BIN / "dvc"), *args], repo, check=check)


def git(repo, *args):
    return run(["git", *args], repo)


def stages_run(result) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


def changed_stages(repo) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json").stdout or "{}"))


def merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and key != "space" \
            else value
    return merged


def commit(repo, message):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The project in a fresh git repo with small data; `dvc repro` not yet run."""
    base = tmp_path_factory.mktemp("e2e")
    repo, data = base / "repo", write_idx_dataset(base / "idx", 30, 8)
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT)
    for name in files.stdout.splitlines():  # the code and config, not results
        if (ROOT / name).is_file() and name.startswith(PROJECT_FILES):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), PROFILE)
    params["data"]["local_dir"] = str(data)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "e2e@example.com")
    git(repo, "config", "user.name", "e2e")
    commit(repo, "project with the small profile")
    return repo


def test_repro_runs_every_stage_then_nothing(repo):
    first = dvc(repo, "repro")
    assert stages_run(first) == ALL_STAGES
    assert "fetch: wrote data/raw/ from the local source" in first.stdout
    for record in ("reports/train/platform.json", "reports/platform.json"):
        platform = json.loads((repo / record).read_text())  # which machine made the numbers
        assert platform["tensorflow"] and platform["cpu"], record
    runs = (repo / "reports/ablation/runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 2 * 2  # the baseline and one variant, two seeds each
    report = (repo / "reports/REPORT.md").read_text()
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert f"| test_accuracy | {metrics['baseline']['test_accuracy']:.4f} |" in report
    assert "- Removing dropout changes test accuracy by " in report
    assert "trained again on the training and validation splits together (" in report
    for section in ("## Data", "## Baseline and tuned", "## Tuning", "## Ablation",
                    "## Training time against accuracy", "## Platform"):
        assert section in report
    for link in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (repo / "reports" / link).is_file(), link
    commit(repo, "first run")
    second = dvc(repo, "repro")
    assert stages_run(second) == set()
    assert "Data and pipelines are up to date" in second.stdout
    assert changed_stages(repo) == set()


def model_hashes(repo) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", []) if out["path"].endswith(".keras")}


def test_forced_rerun_gives_identical_metrics_and_models(repo):
    before, models = (repo / "reports" / "metrics.json").read_text(), model_hashes(repo)
    forced = dvc(repo, "repro", "-f")
    assert stages_run(forced) == ALL_STAGES
    assert (repo / "reports" / "metrics.json").read_text() == before
    assert model_hashes(repo) == models and len(models) == 2  # byte-identical .keras files
    assert json.loads(before)["tuned"]["test_accuracy"] > 0.3  # it learned something
    commit(repo, "forced rerun")


# key changed -> (stages `dvc status` lists, stages `dvc repro` reruns)
SELECTIVE = [
    ({"data.val_fraction": 0.25}, {"prepare"}, ALL_STAGES - {"fetch"}),
    # the ablation varies the baseline: its model and train settings rerun it
    ({"model.hidden_units": [24]}, {"train", "ablate"},
     {"train", "ablate", "evaluate", "visualize", "report"}),
    ({"train.learning_rate": 0.02}, {"train", "ablate"},
     {"train", "ablate", "evaluate", "visualize", "report"}),
    # tune's section lists every setting a trial needs: the baseline's keys leave it alone;
    # ablation.seeds stands for train.seed in the ablation
    ({"train.seed": 11}, {"train"}, {"train", "evaluate", "visualize", "report"}),
    ({"model.activation": "tanh"}, {"train", "ablate"},
     {"train", "ablate", "evaluate", "visualize", "report"}),
    ({"tune.seed": 1}, {"tune"}, {"tune", "export", "evaluate", "visualize", "report"}),
    ({"evaluate.top_k": 3}, {"evaluate"}, {"evaluate", "visualize", "report"}),
    # the ablation's seeds rerun it and what reads its tables: its figures and the report
    ({"ablation.seeds": [0, 2]}, {"ablate"}, {"ablate", "visualize", "report"}),
    ({"visualize.dpi": 50}, {"visualize"}, {"visualize", "report"}),
]


# The ablation's seeds are run for real here (they must rerun the ablation and its readers
# only), a baseline key in the params-diff test below. The others are checked with
# `dvc repro --dry --force-downstream` (the changed stages and everything after them in
# DVC's graph: what a rerun whose outputs change runs) and put back, which keeps this
# module inside CI's budget; DVC stopping early when a rerun stage wrote identical
# outputs is checked for real by the fetch test below.
RUN_FOR_REAL = {"ablation.seeds"}


@pytest.mark.parametrize("change, status, rerun", SELECTIVE,
                         ids=[next(iter(c)) for c, _, _ in SELECTIVE])
def test_a_param_change_reruns_exactly_its_stages(repo, change, status, rerun):
    set_params(repo, change)
    assert changed_stages(repo) == status
    assert stages_run(dvc(repo, "repro", "--dry", "--force-downstream")) == rerun
    if next(iter(change)) not in RUN_FOR_REAL:
        git(repo, "checkout", "--", "params.yaml")
        assert changed_stages(repo) == set()
        return
    assert stages_run(dvc(repo, "repro")) == rerun
    assert changed_stages(repo) == set()
    commit(repo, f"change {change}")


def test_fetch_source_change_reruns_fetch_and_prepare_only(repo):
    # auto finds the same local files first: new source.json, identical prepared data,
    # so DVC sees that train's inputs did not change and stops there.
    set_params(repo, {"data.source": "auto"})
    assert changed_stages(repo) == {"fetch"}
    assert stages_run(dvc(repo, "repro")) == {"fetch", "prepare"}
    commit(repo, "source auto")


def test_params_diff_and_metrics_diff_show_the_change(repo):
    set_params(repo, {"train.learning_rate": 0.005})
    diff = json.loads(dvc(repo, "params", "diff", "--json").stdout)
    assert list(diff["params.yaml"]) == ["train.learning_rate"]
    assert diff["params.yaml"]["train.learning_rate"]["old"] == PROFILE["train"]["learning_rate"]
    assert diff["params.yaml"]["train.learning_rate"]["new"] == 0.005
    table = dvc(repo, "params", "diff").stdout
    assert "train.learning_rate" in table and "0.01" in table and "0.005" in table
    # a baseline key, for real: exactly the stages the param-change table above names
    assert stages_run(dvc(repo, "repro")) == {"train", "ablate", "evaluate", "visualize",
                                               "report"}
    metrics = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    changed = metrics["reports/metrics.json"]
    assert "baseline.test_accuracy" in changed or "baseline.test_loss" in changed
    assert not any(key.startswith("tuned.") for key in changed)  # tune did not rerun
    shown = dvc(repo, "metrics", "show").stdout
    assert "reports/metrics.json" in shown and "tuned.test_accuracy" in shown
    commit(repo, "learning rate 0.005")


def test_experiment_runs_and_is_listed_with_metrics(repo):
    result = dvc(repo, "exp", "run", "-S", "train.epochs=2", "-n", "two-epochs")
    assert stages_run(result) == {"train", "evaluate", "visualize", "report"}
    table = dvc(repo, "exp", "show", "--csv").stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(table))}
    assert rows["two-epochs"]["train.epochs"] == "2"
    assert 0.0 < float(rows["two-epochs"]["baseline.test_accuracy"]) <= 1.0
    assert 0.0 < float(rows["two-epochs"]["ablation.baseline.test_accuracy"]) <= 1.0
    git(repo, "checkout", "--", ".")
    dvc(repo, "checkout", "--force")
    assert changed_stages(repo) == set()


def test_plots_show_writes_a_page_with_curves_and_figures(repo):
    dvc(repo, "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert "baseline_accuracy" in page and "tuned_loss" in page  # curves
    # DVC's own confusion plots from evaluate's predictions, class names as the axes
    assert "baseline_confusion" in page and "tuned_confusion" in page
    assert "Confusion matrix, tuned model (test split)" in page
    assert page.count('"mark": "rect"') >= 4  # DVC's confusion template, twice
    assert '"Ankle boot"' in page and '"Pullover"' in page
    assert "reports/figures/" in page and ".png" in page
    # .dvc/config's template: the chart libraries inline, none from the network
    assert "vegaEmbed" in page and not re.search(r"<script[^>]*\ssrc=", page)
    shutil.rmtree(repo / "plots_html")


# --- bad input: one clear message, and no partial output DVC accepts ----------------


def refetch(repo):
    return dvc(repo, "repro", "-f", "-s", "fetch", check=False)


def assert_stopped(result, stage, message):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{stage}: error:")]
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def local_files(repo):
    return Path(yaml.safe_load((repo / "params.yaml").read_text())["data"]["local_dir"])


@pytest.fixture
def pristine_source(repo):
    """Restore the local source files and the pipeline after a test corrupts them."""
    folder = local_files(repo)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    yield folder
    for name, data in saved.items():
        (folder / name).write_bytes(data)
    git(repo, "checkout", "--", ".")
    dvc(repo, "repro", "-f", "-s", "fetch")
    dvc(repo, "repro")
    assert changed_stages(repo) == set()


def update_md5sums(folder, name):
    import hashlib

    digest = hashlib.md5((folder / name).read_bytes()).hexdigest()
    lines = [f"{digest}  {name}" if line.endswith(name) else line
             for line in (folder / "MD5SUMS").read_text().splitlines()]
    (folder / "MD5SUMS").write_text("\n".join(lines) + "\n")


def test_corrupt_gzip_in_the_local_source(repo, pristine_source):
    name = "train-images-idx3-ubyte.gz"
    data = (pristine_source / name).read_bytes()
    (pristine_source / name).write_bytes(data[: len(data) // 2])  # cut mid-stream
    update_md5sums(pristine_source, name)
    assert_stopped(refetch(repo), "fetch", f"{name}: not a valid gzip file")
    assert "fetch" in changed_stages(repo)
    assert not (repo / "data" / "raw").exists()


def test_truncated_idx_file(repo, pristine_source):
    import gzip

    name = "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress((pristine_source / name).read_bytes())
    (pristine_source / name).write_bytes(gzip.compress(raw[:-100]))
    update_md5sums(pristine_source, name)
    assert_stopped(refetch(repo), "fetch", f"{name}: truncated IDX payload")
    assert "fetch" in changed_stages(repo)


def test_wrong_checksum(repo, pristine_source):
    name = "train-labels-idx1-ubyte.gz"
    (pristine_source / name).write_bytes((pristine_source / name).read_bytes() + b"\0")
    assert_stopped(refetch(repo), "fetch", f"{name}: checksum mismatch.*; to get the last "
                                           "good data back: dvc checkout data/raw$")
    assert "fetch" in changed_stages(repo)
    assert not (repo / "data" / "raw").exists()
    dvc(repo, "checkout", "data/raw")  # what the message says brings the data back
    assert "fetch" not in changed_stages(repo)


def test_params_yaml_that_is_not_valid_yaml(repo):
    good = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(good.replace("train:", "train: [", 1))
    try:
        result = dvc(repo, "repro", check=False)
        assert result.returncode != 0 and "params.yaml" in result.stderr
        status = dvc(repo, "status", check=False)  # refuses too: nothing looks up to date
        assert status.returncode != 0
        assert "unable to read: 'params.yaml'" in status.stderr + status.stdout
        direct = run([sys.executable, "-m", "pipeline.train"], repo, check=False)
        assert_stopped(direct, "train", r"^train: error: params.yaml: line \d+ is not valid YAML")
    finally:
        (repo / "params.yaml").write_text(good)
    assert changed_stages(repo) == set()  # DVC never got far enough to touch an output


def test_a_wrong_type_stops_the_stage_naming_the_key(repo):
    good = (repo / "params.yaml").read_text()
    set_params(repo, {"train.learning_rate": "fast"})
    try:
        result = dvc(repo, "repro", check=False)
        assert_stopped(result, "train", "train.learning_rate: must be a number, got 'fast'")
        assert "train" in changed_stages(repo)
    finally:
        (repo / "params.yaml").write_text(good)
    dvc(repo, "repro")
    assert changed_stages(repo) == set()


def test_a_misspelled_key_stops_the_stage_with_the_valid_name(repo):
    good = (repo / "params.yaml").read_text()
    set_params(repo, {"train.learnig_rate": 0.1})
    try:
        result = dvc(repo, "repro", check=False)
        assert_stopped(result, "train", "^train: error: train.learnig_rate: unknown key; "
                                        "did you mean train.learning_rate\\?$")
    finally:
        (repo / "params.yaml").write_text(good)
    dvc(repo, "repro")  # DVC removed train's outputs before running it
    assert changed_stages(repo) == set()


def file_hashes(*folders: Path) -> dict[str, str]:
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_stage_interrupted_mid_write_keeps_the_last_outputs_and_no_temp_file(repo):
    """Ctrl-C while train writes its DVCLive folder (a temp folder during fit) and before
    the model: one line, exit 130, the previous outputs byte for byte, no temp file."""
    before = file_hashes(repo / "models", repo / "reports")
    set_params(repo, {"train.epochs": 500})  # long enough to be interrupted while training
    # SIGINT's default disposition in the child itself: a runner started without job
    # control (`nohup ... &`) passes SIGINT on as ignored, and Python would keep ignoring it.
    process = subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=command_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        for line in process.stdout:
            if "train epoch 2/500" in line or time.monotonic() > deadline:
                break
        assert list((repo / "reports").glob(".train.*")), "no temp folder while training"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "train: interrupted; no partial outputs were kept"
    assert file_hashes(repo / "models", repo / "reports") == before
    temps = [p for folder in ("models", "reports") for p in (repo / folder).rglob(".*")
             if p.name.endswith((".tmp", ".old")) or ".tmp." in p.name]
    assert not temps, temps
    assert changed_stages(repo) == {"train"}  # the params changed, the outputs did not
    git(repo, "checkout", "--", "params.yaml")
    assert changed_stages(repo) == set()


# --- sharing: a DVC remote, a fresh clone, nothing to rerun ---------------------------


SHARED = ("data/raw/train-images-idx3-ubyte.gz", "data/prepared/data_card.json",
          "models/baseline.keras", "models/tuned.keras", "models/tuned_savedmodel/saved_model.pb")


@pytest.fixture(scope="module")
def pushed(repo, tmp_path_factory):
    """The repo's data and models pushed to a local-folder DVC remote it names in its
    committed .dvc/config (the test repo's, never the project's)."""
    base = tmp_path_factory.mktemp("share")
    dvc(repo, "repro")
    dvc(repo, "remote", "add", "-d", "shared", str(base / "dvc-remote"))
    commit(repo, "share data and models through a DVC remote")
    assert "shared" not in (ROOT / ".dvc" / "config").read_text()
    dvc(repo, "push")
    return base


def test_a_fresh_clone_pulls_everything_and_has_nothing_to_rerun(repo, pushed):
    from PIL import Image

    from pipeline.data import idx

    base = pushed
    clone = base / "clone"
    git(base, "clone", "-q", str(repo), str(clone))
    assert not (clone / "models" / "tuned.keras").exists()
    dvc(clone, "pull")
    assert changed_stages(clone) == set()
    assert stages_run(dvc(clone, "repro")) == set()
    for path in SHARED:
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path

    images, _ = idx.read_split(clone / "data" / "raw", "test")
    (base / "photos").mkdir()
    for i, image in enumerate(images[:8]):
        Image.fromarray(image).save(base / "photos" / f"{i}.png")
    outputs = {}
    for model in ("tuned", "tuned-savedmodel"):
        result = run([sys.executable, "-m", "pipeline.predict", "--json", "--model", model,
                      str(base / "photos")], clone)
        outputs[model] = [p["top_k"][0]["class"] for p in json.loads(result.stdout)["predictions"]]
    assert len(outputs["tuned"]) == 8 and outputs["tuned"] == outputs["tuned-savedmodel"]


def test_dvc_artifacts_get_downloads_a_registered_model_version(repo, pushed, tmp_path):
    """The model registry: GTO tags a version of a dvc.yaml artifact; `dvc artifacts get`
    fetches it by name from the repo's DVC remote."""
    for name, version in (("tuned-savedmodel", "v1.0.0"), ("baseline", "v0.1.0")):
        run([str(BIN / "gto"), "register", name, "--version", version], repo)
    dvc(tmp_path, "artifacts", "get", str(repo), "tuned-savedmodel", "-o", "served")
    for name in ("saved_model.pb", "variables/variables.index"):
        assert (tmp_path / "served" / name).read_bytes() == \
            (repo / "models" / "tuned_savedmodel" / name).read_bytes()
    dvc(tmp_path, "artifacts", "get", str(repo), "baseline", "--rev", "v0.1.0")
    assert (tmp_path / "baseline.keras").read_bytes() == \
        (repo / "models" / "baseline.keras").read_bytes()
