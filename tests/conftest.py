import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.training import engine  # noqa: E402

# One Keras backend per process: this one trains on the training engine, as train and
# tune do; tests of export run it in its own process, on TensorFlow.
engine.use(engine.TRAINING, force=True)

from tests.support import ROOT  # noqa: E402
from tests.support.synthetic import make_splits, write_idx_dataset  # noqa: E402

DELETE = object()  # set_params(root, {"train.epochs": DELETE}) removes the key


@pytest.fixture
def idx_dir(tmp_path):
    """A folder with the four small IDX files and their MD5SUMS."""
    return write_idx_dataset(tmp_path / "idx")


@pytest.fixture(scope="session")
def splits():
    """Small prepared train/val/test splits (400/100/100 samples)."""
    return make_splits()


def new_project(root: Path) -> Path:
    """A throwaway project root: the repository's params.yaml and dvc.yaml, nothing else."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    return new_project(tmp_path / "project")


def set_params(root: Path, changes: dict) -> None:
    """Set (or, with DELETE, remove) dotted keys of root's params.yaml: {"train.epochs": 2};
    a key without a dot replaces a whole section."""
    path = Path(root) / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        if "." not in dotted:
            data[dotted] = value
            continue
        section, key = dotted.split(".", 1)
        if value is DELETE:
            del data[section][key]
        else:
            data.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="session")
def postgres_cluster():
    """A private PostgreSQL server for the session; in CI (CI=true) a missing one fails."""
    from tests.support import postgres

    reason = postgres.missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs PostgreSQL: {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = postgres.PrivateCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster):
    """A SQLAlchemy URL of a fresh, empty database on the private server."""
    return postgres_cluster.create_database()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs folder to fill up for real (root mounts it, the test unmounts it);
    in CI (CI=true) one that cannot be mounted fails instead of skipping."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
                                  str(folder)], capture_output=True, text=True)
        reason = mounted.stderr.strip().splitlines()[-1] if mounted.returncode else None
    except FileNotFoundError:
        reason = "no mount command"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs a tmpfs to fill: {reason}", pytrace=False)
        pytest.skip(f"cannot mount a tmpfs to fill: {reason}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fill folder's file system, then free `leave` bytes; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while out.write(bytes(1 << 16)):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler
