"""A private, throw-away PostgreSQL server for tests, from Debian's `postgresql` package.

The cluster lives in a temporary folder, listens on 127.0.0.1 only (a free port, its
unix socket inside the folder) and trusts local connections, so nothing on the machine
is touched and no password exists. PostgreSQL refuses to run as root, and CI runs as
root: then the server commands run as the `postgres` user the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SERVER_USER = "postgres"  # the package's system user, and the cluster's superuser name


def find_bin_dir() -> Path | None:
    """The newest installed server's bin folder, e.g. /usr/lib/postgresql/15/bin."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return max(found, key=lambda p: int(p.parent.name), default=None) if found else None


def missing_reason() -> str | None:
    """Why a private cluster cannot start here, in one line; None when it can."""
    if find_bin_dir() is None:
        return "PostgreSQL server not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no '{SERVER_USER}' user to run PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    """initdb + pg_ctl in a temporary folder; `url(db)` is a SQLAlchemy URL for a database."""

    def __init__(self):
        self.bin_dir = find_bin_dir()
        # Not pytest's tmp_path: its parents are private to root, the server user
        # must be able to reach the folder.
        self.root = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
        self.data_dir = self.root / "data"
        self.port = free_port()

    def _server(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr.strip() or result.stdout}")
        return result

    def start(self) -> "PrivateCluster":
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
        self._server("initdb", "-D", str(self.data_dir), "-U", SERVER_USER, "--auth=trust",
                     "--encoding=UTF8", "--no-sync")
        self.start_server()
        return self

    def start_server(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.root} -c fsync=off")
        self._server("pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", "60",
                     "-l", str(self.root / "server.log"), "-o", options)

    def stop_server(self) -> None:
        """Down, the data kept: every client is disconnected (fast mode), none gets in."""
        self._server("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")

    def restart(self) -> None:
        """What an administrator's restart does: every client is disconnected (fast
        mode), then the server is back with the same options."""
        self._server("pg_ctl", "restart", "-D", str(self.data_dir), "-m", "fast", "-w",
                     "-t", "60", "-l", str(self.root / "server.log"))

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._server("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate",
                             "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg2

        name = f"test_{uuid.uuid4().hex[:12]}"
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=SERVER_USER,
                                      dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)
