"""Which backend holds the SCP's index and journal: SQLite files in the data dir (the default,
one node) or one PostgreSQL database shared by every node of an archive (``[database] url``).
The services get the parts through :func:`open_scp_storage` and type against the Protocols of
:mod:`stgcmt.storage.interfaces` only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stgcmt.config import DatabaseConfig
from stgcmt.storage.interfaces import InstanceIndex, ScpJournal, ScpQueries
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.storage.scp_journal import CommitmentJournal
from stgcmt.storage.sqlite import ensure_writable_dir
from stgcmt.storage.sqlite_index import SqliteInstanceIndex


class DatabaseUnavailable(OSError):
    """The database cannot be reached (or its schema is newer than ours) at start-up: refuse
    to start rather than accept associations whose data could not be kept. Unlike a
    configuration error, this may pass: a service manager should start us again."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class ScpStorage:
    """The SCP's index and journal, from one backend."""

    index: InstanceIndex
    journal: ScpJournal


def node_name(database: DatabaseConfig, port: int) -> str:
    """This node's name in a shared journal: the configured one, else ``HOSTNAME:PORT``."""
    return database.node or f"{os.uname().nodename}:{port}"


def open_scp_storage(database: DatabaseConfig, data_dir: Path, port: int) -> ScpStorage:
    """Open (and on first start create) the index and the journal. Raises ``OSError`` with
    what to fix when the data dir cannot be written or the database cannot be reached."""
    ensure_writable_dir(data_dir, "data dir")
    if database.url is None:
        return ScpStorage(
            SqliteInstanceIndex(data_dir / "index.sqlite"),
            CommitmentJournal(data_dir / "commitment.sqlite"),
        )
    from stgcmt.storage.postgres.connection import PgDatabase
    from stgcmt.storage.postgres.index import PgInstanceIndex
    from stgcmt.storage.postgres.journal import PgScpJournal

    db = PgDatabase(database.url, pool_size=database.pool_size)
    node = node_name(database, port)
    return ScpStorage(PgInstanceIndex(db, node), PgScpJournal(db, node, database.lease))


def open_scp_queries(database_url: str | None, data_dir: Path) -> ScpQueries:
    """Read-only views: of the data dir's SQLite files, or of the shared database."""
    if database_url is None:
        return SqliteScpQueries(data_dir)
    from stgcmt.storage.postgres.queries import PgScpQueries

    return PgScpQueries(database_url)


def scp_status(
    data_dir: Path | None, limit: int = 50, *, database_url: str | None = None
) -> dict[str, Any]:
    """``stgcmt status`` of an archive: its data dir's SQLite files, or the whole cluster in
    its database."""
    return open_scp_queries(database_url, Path(data_dir or ".")).status(limit)
