"""The environment is the locked one: requirements.lock's versions are what is installed
(the README's set-up line and .ci/run install from it)."""

import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from tests.support import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ \\;]+)", re.MULTILINE)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


INSTALLERS = {"pip", "setuptools", "wheel"}  # the venv's own tooling, upgraded at will
LOCKED = {normalized(name): version
          for name, version in PIN.findall((ROOT / "requirements.lock").read_text())
          if normalized(name) not in INSTALLERS}


def test_the_lock_pins_the_projects_direct_dependencies():
    requirements = [Requirement(r) for r in metadata.requires("fashion-mnist-pipeline") or []]
    direct = {normalized(r.name) for r in requirements  # this platform's, the dev extra's
              if r.marker is None or r.marker.evaluate({"extra": "dev"})}
    assert direct and direct <= set(LOCKED), sorted(direct - set(LOCKED))


@pytest.mark.parametrize("name", sorted(LOCKED))
def test_what_is_installed_is_the_locked_version(name):
    assert metadata.version(name) == LOCKED[name], name
