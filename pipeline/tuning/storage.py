"""Where the tune study lives: the embedded journal file by default, PostgreSQL when
processes on many machines share it (docs/tuning-on-many-machines.md).

The database URL comes from an environment variable, never from params.yaml or git:
credentials stay out of the repository, and switching storage does not change the
stage's params, so it does not rerun anything by itself.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from pipeline.core.errors import PipelineError

STORAGE_ENV = "FMNIST_TUNE_STORAGE"
ARTIFACTS_ENV = "FMNIST_TUNE_ARTIFACTS"

# A worker records a heartbeat every HEARTBEAT_SECONDS while a trial runs; a RUNNING trial
# silent for GRACE_SECONDS is failed by the next process that looks and queued to rerun,
# at most MAX_RETRY times (a trial that kills its worker every time must not loop forever;
# past that, a freshly sampled trial takes its place).
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20
MAX_RETRY = 2
CONNECT_TIMEOUT_SECONDS = 10
# A database that drops its connections (a restart, a failover) is retried this long
# before the process stops with one line; read at each outage, so tests can shorten it.
RECONNECT_SECONDS = 60


def storage_url() -> str | None:
    """The shared database's URL from the environment; None = the embedded file."""
    return os.environ.get(STORAGE_ENV, "").strip() or None


@dataclass
class StudyHome:
    """The study's storage and the artifact store holding its best model."""

    storage: object
    artifacts: object
    shared: bool  # a database other processes may be filling right now
    where: str  # for messages, never a password


def open_home() -> StudyHome:
    """The embedded journal under reports/tune/study/, or the shared database named by
    FMNIST_TUNE_STORAGE with its models in FMNIST_TUNE_ARTIFACTS: a folder every machine
    running trials can write and the stage can read (the model of the best trial, which
    any of them may have run, waits there)."""
    from optuna.artifacts import FileSystemArtifactStore

    from pipeline.tuning import study

    url = storage_url()
    if url is None:
        return StudyHome(study.embedded_storage(), study.artifact_store(), False,
                         f"{study.STUDY_DIR}/")
    folder = os.environ.get(ARTIFACTS_ENV, "").strip()
    if not folder:
        raise PipelineError(f"{STORAGE_ENV} is set, so {ARTIFACTS_ENV} must be too: a folder "
                            "every machine running trials can write (the best model waits "
                            "there until the stage writes it)")
    try:  # before connecting: a bad folder is named even when the database is down
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{ARTIFACTS_ENV}={folder}: {exc.strerror}") from None
    storage = open_database(url)
    return StudyHome(storage, FileSystemArtifactStore(folder), True,
                     f"PostgreSQL at {describe(url)}")


def describe(url: str) -> str:
    """host:port/database of a URL, never its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "an unparsable URL"
    where = parsed.host or "localhost"
    if parsed.port:
        where = f"{where}:{parsed.port}"
    return f"{where}/{parsed.database}"


def open_database(url: str, heartbeat_seconds: int = HEARTBEAT_SECONDS,
                  grace_seconds: int = GRACE_SECONDS, max_retry: int = MAX_RETRY):
    """Optuna's RDB storage on PostgreSQL, with heartbeats and a retry of dead trials.

    An unreachable database stops with one line naming the host. Two processes creating
    Optuna's tables in a fresh database at the same moment can collide; the loser retries.
    """
    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    where = describe(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise PipelineError(f"{STORAGE_ENV} is not a database URL "
                            "(expected postgresql://user@host[:port]/database)") from None
    if parsed.get_backend_name() != "postgresql":
        raise PipelineError(f"{STORAGE_ENV} must name a PostgreSQL database "
                            f"(postgresql://user@host[:port]/database), "
                            f"not {parsed.get_backend_name()}")
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://; the project ships
        # psycopg2 (binary wheels, no compiler needed on a worker machine).
        url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _connect(url, where, parsed.drivername, heartbeat_seconds, grace_seconds,
                           RerunStaleTrial(max_retry))
    storage.where = where
    return storage


class RerunStaleTrial:
    """The storage's heartbeat_stale_trial_callback: queue a rerun of a trial whose worker
    died, with its settings, unless it already is the max_retry-th rerun of one.
    Optuna's RetryHeartbeatStaleTrialCallback would copy the pruner's rung records into
    the rerun (see study.rerun_failed)."""

    def __init__(self, max_retry: int):
        self.max_retry = max_retry

    def __call__(self, shared_study, trial) -> None:
        from pipeline.tuning import study

        reruns, first = 0, trial
        while study.RETRY_OF in first.user_attrs:
            reruns += 1
            first = shared_study.trials[first.user_attrs[study.RETRY_OF]]
        if reruns < self.max_retry:
            study.rerun_failed(shared_study, trial)


def _connect(url, where, drivername, heartbeat_seconds, grace_seconds, on_stale):
    import optuna
    import sqlalchemy.exc

    for attempt in range(3):
        try:
            return RidingOutStorage(
                url,
                engine_kwargs={"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS},
                               "pool_pre_ping": True},
                heartbeat_interval=heartbeat_seconds,
                grace_period=grace_seconds,
                heartbeat_stale_trial_callback=on_stale,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(1.0 + attempt)
        except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError) as exc:
            if not connection_lost(exc):
                raise
            raise PipelineError(f"cannot reach the tune database at {where} "
                                f"({STORAGE_ENV}): {_reason(exc)}") from None
        except ImportError:
            raise PipelineError(f"{STORAGE_ENV}: no Python driver installed for "
                                f"{drivername} (the project installs psycopg2: "
                                "write postgresql:// or postgresql+psycopg2://)") from None


class DatabaseLost(PipelineError):
    """The shared database stayed unreachable for RECONNECT_SECONDS."""


def _unwrapped(exc: BaseException) -> BaseException:
    """The SQLAlchemy error behind Optuna's StorageInternalError, else exc itself."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def connection_lost(exc: BaseException) -> bool:
    """Whether exc is a dropped or refused connection, which a retry once the database is
    back can cure."""
    import sqlalchemy.exc

    cause = _unwrapped(exc)
    return (isinstance(cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                               sqlalchemy.exc.PendingRollbackError))
            or (isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated))


def _reason(exc: BaseException) -> str:
    """The first line of the driver's message behind a database error."""
    cause = _unwrapped(exc)
    text = str(getattr(cause, "orig", None) or cause).strip()
    return text.splitlines()[0] if text else "no answer"


class RidingOutStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage riding out a database restart: each call that meets a dropped
    connection is retried (every call is one transaction, rolled back when it failed)
    until the server is back, for RECONNECT_SECONDS; then the process stops with one
    line, and every later call fails at once, so Optuna's clean-up after a trial does not
    wait again. Optuna alone raises at the first dropped connection, and its heartbeat
    thread dies with a traceback, leaving a live trial to be failed as stale."""

    lost: DatabaseLost | None = None
    where = "the database"  # host:port/database, set by open_database

    def ride_out(self, operation):
        deadline = None
        while True:
            if self.lost is not None:
                raise self.lost
            try:
                return operation()
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + RECONNECT_SECONDS
                if now >= deadline:
                    self.lost = DatabaseLost(
                        f"lost the tune database at {self.where} ({STORAGE_ENV}) for "
                        f"{RECONNECT_SECONDS} s: {_reason(exc)}; the study keeps its "
                        "finished trials: rerun once the database is back")
                    raise self.lost from None
                time.sleep(min(0.5, deadline - now))

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.ride_out(lambda: super(RidingOutStorage, self).record_heartbeat(trial_id))
        except DatabaseLost:
            pass  # in Optuna's heartbeat thread: the main thread says it, in one line


def _riding_out(name: str):
    method = getattr(optuna.storages.RDBStorage, name)

    def call(self, *args, **kwargs):
        return self.ride_out(lambda: method(self, *args, **kwargs))

    call.__name__ = name
    return call


# Every call that opens a transaction: the storage's interface, and the private ones
# Optuna's cache in front of it (_CachedStorage) calls. Not the *_without_commit helpers:
# they run inside a caller's transaction, which is what gets retried.
for _name in (*optuna.storages.BaseStorage.__abstractmethods__, "get_best_trial",
              "get_trial_id_from_study_id_trial_number", "get_trial_param",
              "get_trial_user_attrs", "get_trial_system_attrs", "_get_stale_trial_ids",
              "_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param"):
    setattr(RidingOutStorage, _name, _riding_out(_name))


class StudyLock:
    """A lock every process sharing the study takes to count its trials and claim one.

    On PostgreSQL it is an advisory lock named after the study, held by this lock's own
    connection (the server releases it if the process dies); the embedded file has one
    process, so it is a no-op there. A restarted server drops the lock with the
    connection: acquire reconnects (riding out the restart like the storage), and
    release says whether the lock was still held, so a claim made without it is checked.
    """

    def __init__(self, storage, study_name: str):
        import hashlib

        self.storage, self.engine, self.connection = storage, None, None
        self.held = False
        self.key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big",
                                  signed=True)
        engine = getattr(storage, "engine", None)
        if engine is not None and engine.dialect.name == "postgresql":
            self.engine = engine

    def _call(self, function: str) -> bool:
        """SELECT function(key) on the lock's connection, made afresh after a drop."""
        from sqlalchemy import text

        if self.connection is None:
            self.connection = self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT")
        try:
            return bool(self.connection.execute(text(f"SELECT {function}(:key)"),
                                                {"key": self.key}).scalar())
        except Exception:
            self.connection.invalidate()  # dropped: the next call connects afresh
            self.connection = None
            raise

    def acquire(self) -> None:
        if not self.held:
            if self.engine is not None:
                self.storage.ride_out(lambda: self._call("pg_advisory_lock"))
            self.held = True

    def release(self) -> bool:
        """Release the lock; False if the server had dropped it since acquire."""
        if not self.held:
            return True
        self.held = False
        if self.engine is None:
            return True
        try:
            return self._call("pg_advisory_unlock")
        except Exception as exc:
            if not connection_lost(exc):
                raise
            return False  # the connection, and the lock with it, went with the server

    def close(self) -> None:
        self.release()
        if self.connection is not None:
            self.connection.close()
