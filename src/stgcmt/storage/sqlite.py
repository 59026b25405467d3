"""SQLite plumbing shared by the instance index and the journals.

One connection per database, guarded by a lock: the engine serves every association in its
own thread, and SQLite connections must not be used concurrently. WAL lets other processes (the
``status`` command) read while the service writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

PROBE_NAME = ".stgcmt-write-probe"


class StorageUnavailable(OSError):
    """A directory or database we must write to cannot be written: refuse to start rather than
    accept associations whose data could not be kept. Subclasses OSError so callers that
    already treat I/O failures at start-up as fatal (``except OSError``) keep doing so."""

    def __init__(self, what: str, path: Path, reason: str) -> None:
        super().__init__(
            f"{what} {path} is not writable ({reason}):"
            f" fix its permissions or choose another {what}"
        )
        self.what = what
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


def _reason(exc: BaseException) -> str:
    """The short cause, e.g. 'read-only file system', without the path repeated."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


def ensure_writable_dir(path: Path, what: str = "data dir") -> Path:
    """Create ``path`` (and parents), then prove a file can be created, synced and removed in
    it. Permission bits are not enough: root ignores them, read-only mounts do not."""
    path = Path(path)
    probe = path / PROBE_NAME
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"stgcmt")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageUnavailable(what, path, _reason(exc)) from exc
    return path


class Database:
    """A locked SQLite connection in WAL mode with a fixed schema."""

    def __init__(self, path: Path, schema: str, *, synchronous: str = "NORMAL") -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable("directory", path.parent, _reason(exc)) from exc
        self.path = path
        self._lock = threading.RLock()
        self._synchronous = synchronous
        try:
            self._conn = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable("database", path, str(exc)) from exc
        try:
            self._open(schema)
        except (sqlite3.Error, OSError) as exc:
            self._conn.close()
            if isinstance(exc, StorageUnavailable):
                raise
            raise StorageUnavailable("database", path, _reason(exc)) from exc

    def _open(self, schema: str) -> None:
        """Settings, write probe, schema. SQLite silently opens a file it cannot write
        read-only, and in WAL mode even BEGIN IMMEDIATE succeeds; only a real write shows it,
        so create a table and roll it back before anything relies on this database."""
        self._conn.row_factory = sqlite3.Row
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageUnavailable(
                "database", self.path, f"cannot create its write-ahead log (journal mode {mode})"
            )
        self._conn.execute(f"PRAGMA synchronous={self._synchronous}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("CREATE TABLE _stgcmt_write_probe (x)")
        finally:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
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
                self._conn.execute("COMMIT")
            except BaseException:
                self._roll_back()
                raise
            finally:
                if durable:
                    self._conn.execute(f"PRAGMA synchronous={self._synchronous}")

    def _roll_back(self) -> None:
        """Roll back what is left of a failed transaction. A failed COMMIT (disk full) may
        leave it open, and SQLite may already have rolled it back itself: both must leave
        the connection usable for the next transaction once storage is back."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

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


T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Slices of ``items`` of at most ``size`` elements (bounded batches for SQL lookups)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
