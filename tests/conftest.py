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


@pytest.fixture(scope="session")
def postgres_cluster():
    """A private PostgreSQL server for the session; in CI (CI=true) a missing one fails."""
    from tests import postgres

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
