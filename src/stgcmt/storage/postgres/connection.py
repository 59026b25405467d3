"""PostgreSQL plumbing shared by the index, the journal and the queries: a connection pool that
replaces connections the server dropped, every driver error turned into ``OSError`` (what the
services already treat as a storage failure), and the schema brought to its version at start.

Commits are durable by default in PostgreSQL (``synchronous_commit = on``: the WAL is flushed
before COMMIT returns). Writes that promise nothing (a new, not yet durable index row; progress
between two promises) turn it off for their own transaction only, as the SQLite side commits
them with ``synchronous=NORMAL``; the commitment barrier, the journaled request, the verdict,
the claims and the deliveries keep it on.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from weakref import WeakKeyDictionary

import psycopg
from psycopg_pool import ConnectionPool

from stgcmt.storage.backends import DatabaseUnavailable
from stgcmt.storage.postgres.schema import SchemaTooNew, migrate

CONNECT_TIMEOUT = 10
"""Seconds to reach the server for one connection (libpq ``connect_timeout``)."""
IDLE_CHECK = 1.0
"""Seconds idle after which a pooled connection is checked before it is used again."""
POOL_TIMEOUT = 10.0
"""Seconds a thread waits for a free connection, or for the server to come back, before its
work fails as a storage error (a C-STORE is then answered within a peer's DIMSE timeout)."""
RECONNECT_TIMEOUT = 60.0
"""Seconds the pool keeps trying to open one connection in the background before it logs the
failure and drops that attempt (it opens new ones on demand once the server is back)."""


def shown_url(url: str) -> str:
    """The URL as logs and errors show it: any password replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="/*"
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def as_os_error(exc: psycopg.Error, where: str) -> OSError:
    """A driver error as the services see storage failures: ENOSPC when the server is out of
    disk (SQLSTATE class 53, insufficient resources), EIO otherwise."""
    state = getattr(exc, "sqlstate", None) or ""
    code = errno.ENOSPC if state.startswith("53") else errno.EIO
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return OSError(code, f"database {where}: {first_line}")


class PgDatabase:
    """A pool of connections to one database, schema migrated once when it is opened."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.shown = shown_url(url)
        self._returned: WeakKeyDictionary[psycopg.Connection[Any], float] = WeakKeyDictionary()
        self._first_connection()
        self.pool: ConnectionPool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"connect_timeout": CONNECT_TIMEOUT},
            check=self._check_if_idle,
            reset=self._returned_now,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            open=False,
            name="stgcmt",
        )
        self.pool.open(wait=False)

    def _first_connection(self) -> None:
        """Connect once directly (the pool would only say it timed out, not why) and bring the
        schema to the current version."""
        try:
            with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT) as conn:
                migrate(conn)
        except (psycopg.Error, SchemaTooNew) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseUnavailable(
                errno.EIO,
                f"cannot use the PostgreSQL database {self.shown} ({reason}): start the server"
                " or fix --database / [database] url",
            ) from exc

    def _returned_now(self, conn: psycopg.Connection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        """Before a connection is handed out: one empty round trip if it sat idle (the server
        may have restarted or dropped it meanwhile; a broken one is replaced). One in use a
        moment ago was working then: checking it every time would cost a round trip per
        transaction on the C-STORE path; if the server died since, its next statement fails
        as a storage error and the pool replaces it."""
        if time.monotonic() - self._returned.get(conn, 0.0) >= IDLE_CHECK:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on a pooled connection; ``durable=False`` commits without waiting
        for the WAL flush (a crash of the server may lose it, nothing was promised)."""
        with self._cursor() as cursor:
            if not durable:
                cursor.execute("SET LOCAL synchronous_commit = off")
            yield cursor

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read (its own short transaction)."""
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor inside a transaction on a pooled connection (checked first, replaced when
        the server dropped it); driver errors leave as ``OSError``."""
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield cursor
        except psycopg.Error as exc:
            raise as_os_error(exc, self.shown) from exc

    def close(self) -> None:
        """Close the pool (idempotent: the index and the journal share it)."""
        self.pool.close()
