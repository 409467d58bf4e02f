import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.synthetic import make_splits, write_idx_dataset  # noqa: E402


@pytest.fixture
def idx_dir(tmp_path):
    """A folder with the four small IDX files and their MD5SUMS."""
    return write_idx_dataset(tmp_path / "idx")


@pytest.fixture(scope="session")
def splits():
    """Small prepared train/val/test splits (400/100/100 samples)."""
    return make_splits()
