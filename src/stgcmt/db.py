"""SQLite plumbing shared by the instance index and the journals.

One connection per database, guarded by a lock: pynetdicom serves every association in its own
thread, and SQLite connections must not be used concurrently. WAL lets other processes (the
``status`` command) read while the service writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    """A locked SQLite connection in WAL mode with a fixed schema."""

    def __init__(self, path: Path, schema: str, *, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._synchronous = synchronous
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as conn:
            for statement in filter(str.strip, schema.split(";")):
                conn.execute(statement)

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``durable`` makes this commit reach stable storage even when
        the connection otherwise runs with synchronous=NORMAL (the commitment barrier)."""
        with self._lock:
            if durable:
                self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                if durable:
                    self._conn.execute(f"PRAGMA synchronous={self._synchronous}")

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_readonly(path: Path) -> sqlite3.Connection:
    """For inspection tools: never creates a database, never writes."""
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    return conn
