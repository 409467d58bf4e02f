"""Each process's Keras backend and thread count, chosen before Keras loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.core.errors import PipelineError
from pipeline.training import engine
from tests.support import ROOT

REPORT = ("import json, sys\n"
          "from pipeline.training import engine\n"
          "engine.use(sys.argv[1], threads=int(sys.argv[2]) or None,\n"
          "           force=sys.argv[3] == 'force')\n"
          "import keras\n"
          "print(json.dumps(engine.description()))\n")


def fresh_process(backend: str, threads: int = 0, force: bool = False, **env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in (engine.BACKEND_ENV, engine.XLA_THREADS_ENV)}
    done = subprocess.run(
        [sys.executable, "-c", REPORT, backend, str(threads), "force" if force else "default"],
        env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_runs_on_jax_with_a_thread_per_core_unless_capped():
    cores = len(os.sched_getaffinity(0))
    default = fresh_process(engine.TRAINING)
    assert (default["keras_backend"], default["compute_threads"]) == ("jax", cores)
    assert default["jax"] == __import__("jax").__version__
    assert fresh_process(engine.TRAINING, threads=1)["compute_threads"] == 1


def test_a_users_backend_wins_except_for_export():
    assert fresh_process(engine.TRAINING, KERAS_BACKEND="tensorflow") == {
        "keras_backend": "tensorflow"}
    assert fresh_process(engine.EXPORT, force=True, KERAS_BACKEND="jax") == {
        "keras_backend": "tensorflow"}


def test_choosing_another_backend_after_keras_loaded_is_refused():
    import keras

    assert keras.backend.backend() == engine.TRAINING  # tests/conftest.py chose it
    with pytest.raises(RuntimeError, match="keras already runs on jax, not tensorflow"):
        engine.use(engine.EXPORT, force=True)
    assert os.environ[engine.BACKEND_ENV] == engine.TRAINING


def test_a_thread_count_after_jax_started_computing_is_refused(monkeypatch):
    import jax

    jax.devices()
    monkeypatch.delenv(engine.XLA_THREADS_ENV, raising=False)
    with pytest.raises(RuntimeError, match="before JAX starts computing"):
        engine.use(engine.TRAINING, threads=1)
    assert engine.XLA_THREADS_ENV not in os.environ


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("FMNIST_TUNE_THREADS", value)
    with pytest.raises(PipelineError, match=f"^FMNIST_TUNE_THREADS={value}: must be a whole "
                                            "number of threads >= 1$"):
        engine.threads_from("FMNIST_TUNE_THREADS")


def test_an_unset_thread_count_leaves_the_default(monkeypatch):
    monkeypatch.setenv("FMNIST_TUNE_THREADS", " ")
    assert engine.threads_from("FMNIST_TUNE_THREADS") is None
    monkeypatch.setenv("FMNIST_TUNE_THREADS", "3")
    assert engine.threads_from("FMNIST_TUNE_THREADS") == 3


REUSE_REPORT = (
    "import json, os, sys\n"
    "from pipeline.training import engine\n"
    "engine.use('jax')\n"
    "import jax, keras, numpy as np\n"
    "hits = []\n"
    "jax.monitoring.register_event_listener(\n"
    "    lambda event, **kw: hits.append(event) if event.endswith('/cache_hits') else None)\n"
    "x, y = np.ones((64, 4), 'float32'), np.zeros(64, 'int32')\n"
    "for seed in (1, 2):  # the same model twice, as the ablation's seeds of a variant\n"
    "    keras.utils.set_random_seed(seed)\n"
    "    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])\n"
    "    model.compile('sgd', 'sparse_categorical_crossentropy')\n"
    "    model.fit(x, y, epochs=1, verbose=0)\n"
    "folder = jax.config.jax_compilation_cache_dir\n"
    "print(json.dumps({'folder': folder, 'hits': len(hits), 'files': len(os.listdir(folder))}))\n")


def test_a_process_compiles_each_program_once_and_leaves_no_cache_behind():
    done = subprocess.run([sys.executable, "-c", REUSE_REPORT],
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["hits"] >= 1 and report["files"] >= 1  # the second model's train step
    assert os.path.basename(report["folder"]).startswith("fmnist-xla-")
    assert not os.path.exists(report["folder"])  # removed when the process ended


def test_a_users_compilation_cache_is_kept(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "earlier-entry").write_text("kept")
    done = subprocess.run([sys.executable, "-c", REUSE_REPORT],
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["folder"] == str(tmp_path / "mine")
    assert (tmp_path / "mine" / "earlier-entry").read_text() == "kept"  # used, not removed
