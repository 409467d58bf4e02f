"""The commands a person runs by hand, installed by pyproject.toml's [project.scripts]."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def help_of(*command: str) -> str:
    result = subprocess.run(list(command) + ["--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command, options", [
    ((str(BIN / "fmnist-predict"),), ["usage: fmnist-predict", "--model", "--top-k", "--json",
                                      "--data-card", "PATH"]),
    ((sys.executable, "-m", "pipeline.predict"), ["usage: python -m pipeline.predict",
                                                  "--model", "--top-k"]),
    ((str(BIN / "fmnist-tune-worker"),), ["usage: fmnist-tune-worker", "FMNIST_TUNE_STORAGE",
                                          "FMNIST_TUNE_ARTIFACTS", "FMNIST_TUNE_THREADS"]),
    ((sys.executable, "-m", "pipeline.tune"), ["usage: python -m pipeline.tune", "--worker",
                                               "FMNIST_TUNE_STORAGE"]),
])
def test_help_names_every_option(command, options):
    shown = " ".join(help_of(*command).split())  # argparse wraps lines
    for option in options:
        assert option in shown, option
