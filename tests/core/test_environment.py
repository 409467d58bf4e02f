"""The environment is the locked one: requirements.lock's versions are what is installed
(the README's set-up line and .ci/run install from it)."""

import re
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ \\;]+)", re.MULTILINE)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


INSTALLERS = {"pip", "setuptools", "wheel"}  # the venv's own tooling, upgraded at will
LOCKED = {normalized(name): version
          for name, version in PIN.findall((ROOT / "requirements.lock").read_text())
          if normalized(name) not in INSTALLERS}


def test_the_lock_pins_the_projects_direct_dependencies():
    direct = {normalized(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
              for requirement in metadata.requires("fashion-mnist-pipeline") or []
              if "extra ==" not in requirement and "platform_machine != 'x86_64'"
              not in requirement}
    assert direct and direct <= set(LOCKED), sorted(direct - set(LOCKED))


@pytest.mark.parametrize("name", sorted(LOCKED))
def test_what_is_installed_is_the_locked_version(name):
    assert metadata.version(name) == LOCKED[name], name
