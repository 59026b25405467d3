"""A private PostgreSQL cluster for the tests: Debian's ``postgresql-15`` binaries, ``initdb`` in
a temporary directory, the server on a Unix socket in that directory and a free TCP port on
127.0.0.1, a fresh database per test, stopped at the end of the session.

PostgreSQL refuses to run as root; as root the cluster belongs to the ``postgres`` system user
(created by the Debian package) and its commands run through ``runuser``. Every wait is
bounded; a missing binary fails the test with what to install.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.common import LOCALHOST, ensure_debian_package, free_port

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "stgcmt"
START_TIMEOUT = 60
"""Seconds pg_ctl may take to start, stop or restart the server (``-t``, then killed)."""


def _binaries() -> Path:
    """The PostgreSQL 15 binary directory, installing Debian's package when we are root."""
    if not (BIN_DIR / "initdb").exists():
        ensure_debian_package(str(BIN_DIR / "initdb"), "postgresql-15")
    if not (BIN_DIR / "initdb").exists():
        pytest.fail(f"{BIN_DIR}/initdb missing: install Debian's postgresql-15")
    return BIN_DIR


class PostgresCluster:
    """One server for the whole session. ``url(db)`` gives libpq URLs (Unix socket by
    default, TCP on 127.0.0.1 with ``tcp=True``)."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="stgcmt-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._names = itertools.count(1)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> PostgresCluster:
        self.socket_dir.mkdir()
        if self.owner:
            shutil.chown(self.root, self.owner)
            shutil.chown(self.socket_dir, self.owner)
        self._run(
            "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self._pg_ctl("start", "-l", self.log, "-o", self._server_options())
        return self

    def _server_options(self) -> str:
        return (
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses={LOCALHOST}"
            " -c max_connections=200 -c fsync=on"
        )

    def restart(self) -> None:
        """Immediate restart: every backend is killed mid-transaction (what a crash of the
        server or a lost connection looks like to the nodes), then crash recovery runs."""
        self._pg_ctl("restart", "-m", "immediate", "-l", self.log, "-o", self._server_options())

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _pg_ctl(self, *args: str | Path) -> None:
        self._run("pg_ctl", "-D", self.data, "-w", "-t", str(START_TIMEOUT), *args)

    def _run(self, program: str, *args: str | Path) -> None:
        command = [str(self.bin / program), *map(str, args)]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT + 30, cwd=self.root
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"{program} failed ({done.returncode}): {done.stderr}\n{log[-2000:]}")

    # -- databases -----------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, tcp: bool = False) -> str:
        """A libpq URL: the Unix-socket form the issue names, or TCP on 127.0.0.1."""
        if tcp:
            return f"postgresql://{SUPERUSER}@{LOCALHOST}:{self.port}/{database}"
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
