"""The SQLite :class:`~stgcmt.storage.interfaces.InstanceIndex` (``index.sqlite``).

Rows of small instances are written in batches by a :class:`~.row_writer.RowWriter` (visible to
:meth:`SqliteInstanceIndex.lookup` from the moment they are put); lookups read through a
connection of their own per thread, so a C-STORE answered on the event loop never waits for the
writer's transaction (WAL readers do not block on a writer).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from stgcmt.faults import crash_point
from stgcmt.storage.interfaces import IndexedInstance, InstanceRow
from stgcmt.storage.row_writer import RowWriter
from stgcmt.storage.sqlite import Database, chunked
from stgcmt.storage.uid_filter import UidFilter

LOOKUP_BATCH = 500
READER_MMAP_BYTES = 256 << 20
"""Lookups read the database through mmap: a page is a memory access, not a pread()."""
IDLE_READERS = 4
"""Read-only connections kept open between lookups (more are opened while busy)."""
WRITE_AT_ONCE_BYTES = 64 * 1024
"""A row for an instance at least this big is written before :meth:`SqliteInstanceIndex.put`
returns: its transfer took far longer than an insert, and a full disk is then told to the
C-STORE that filled it rather than to a commitment later."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT,
    series_instance_uid TEXT,
    patient_id TEXT,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source_aet TEXT,
    received_at REAL NOT NULL,
    durable INTEGER NOT NULL DEFAULT 0,
    read_back INTEGER NOT NULL DEFAULT 0,
    unsafe INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_not_durable ON instances (durable) WHERE durable = 0;
CREATE TABLE IF NOT EXISTS class_conflicts (
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    source_aet TEXT,
    received_at REAL NOT NULL,
    PRIMARY KEY (sop_instance_uid, sop_class_uid)
)
"""

_ROW = (
    "sop_instance_uid, sop_class_uid, path, size, sha256, durable, received_at, read_back, unsafe"
)
_COPY = "sop_instance_uid = ? AND sha256 = ? AND received_at = ?"
_MARK = (
    f"UPDATE instances SET durable = 1, read_back = max(read_back, ?) WHERE unsafe = 0 AND {_COPY}"
)
_UNSAFE = "UPDATE instances SET unsafe = 1 WHERE durable = 0 AND unsafe = 0 AND "
_ADDED_COLUMNS = {
    "read_back": "INTEGER NOT NULL DEFAULT 0",  # such rows are read back once more (checksum)
    "unsafe": "INTEGER NOT NULL DEFAULT 0",
}
"""Columns indexes made by older versions lack, added on open."""
_INSERT = (
    "INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid, study_instance_uid,"
    " series_instance_uid, patient_id, transfer_syntax, path, size, sha256, source_aet,"
    " received_at, durable) VALUES "
)
_VALUES = "(?,?,?,?,?,?,?,?,?,?,?,?)"


def _insert_sql(rows: int) -> str:
    """One INSERT for a whole batch: one statement step (one release of the GIL), not one per
    row; rows of one UID are applied in order, the last one kept."""
    return _INSERT + ",".join([_VALUES] * rows)


def _indexed(row: Sequence) -> IndexedInstance:
    """An :class:`IndexedInstance` from the columns of ``_ROW``."""
    return IndexedInstance(
        row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], bool(row[7]), bool(row[8])
    )


def _add_missing_columns(db: Database) -> None:
    """Indexes made before a column of :data:`_ADDED_COLUMNS` existed get it."""
    columns = {row[1] for row in db.query("PRAGMA table_info(instances)")}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in columns:
            with db.transaction() as conn:
                conn.execute(f"ALTER TABLE instances ADD COLUMN {name} {definition}")


class SqliteInstanceIndex:
    """Instance rows keyed by SOP Instance UID; ``path`` holds the blob name."""

    node: str | None = None
    """Held by this process alone: nobody else adds rows."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)
        _add_missing_columns(self.db)
        self.path = path
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._rows = RowWriter(self._insert, "stgcmt-index-writer")
        self._known = UidFilter(self._row_count())
        self._known.fill(self._all_uids, "stgcmt-index-filter")

    def lookup(self, uids: Sequence[str]) -> dict[str, IndexedInstance]:
        """Pending rows first (the newest copy), then the database for the UIDs it may hold."""
        found: dict[str, IndexedInstance] = {}
        unwritten = []
        for uid in uids:
            pending = self._rows.pending(uid)
            if pending is not None:
                found[uid] = IndexedInstance.of(pending)
            elif self._known.may_hold(uid):
                unwritten.append(uid)
        if not unwritten:
            return found
        with self._reading() as reader:
            for batch in chunked(unwritten, LOOKUP_BATCH):
                marks = ",".join("?" * len(batch))
                for row in reader.execute(
                    f"SELECT {_ROW} FROM instances WHERE sop_instance_uid IN ({marks})",
                    list(batch),
                ):
                    found.setdefault(row[0], _indexed(row))
        return found

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection, taken from the idle ones (or opened) and given back after
        use. Not one per thread: every association has a thread of its own, and a connection
        kept per thread would hold two descriptors (database and WAL) per association served
        until the index closes. At most :data:`IDLE_READERS` idle ones are kept."""
        with self._readers_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = self._open_reader()
        try:
            yield conn
        finally:
            with self._readers_lock:
                keep = not self._closed and len(self._idle_readers) < IDLE_READERS
                if keep:
                    self._idle_readers.append(conn)
            if not keep:
                conn.close()

    def _open_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        conn.execute("PRAGMA query_only=ON")
        conn.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
        return conn

    def _row_count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM instances")[0][0])

    def _all_uids(self) -> Iterable[str]:
        """Every UID in the database, through a reader held until the fill ends."""
        with self._reading() as reader:
            for (uid,) in reader.execute("SELECT sop_instance_uid FROM instances"):
                yield uid

    def put(self, row: InstanceRow) -> None:
        """Insert or replace, in the writer's next batch (at once for a large instance). OSError
        while rows cannot be written (ENOSPC when the index is full)."""
        self._known.add(row.sop_instance_uid)
        self._rows.add(row)
        if row.size >= WRITE_AT_ONCE_BYTES:
            self._rows.flush()

    def flush(self) -> None:
        """Write every row put so far (the durability barrier needs them in the database)."""
        self._rows.flush()

    def _insert(self, rows: Sequence[InstanceRow]) -> None:
        """One transaction for a batch; an SQLite failure becomes ``OSError``."""
        try:
            with self.db.transaction() as conn:
                conn.execute(_insert_sql(len(rows)), [v for row in rows for v in _columns(row)])
                crash_point("scp.index.mid_batch")
        except sqlite3.Error as exc:
            code = errno.ENOSPC if "full" in str(exc) else errno.EIO
            raise OSError(code, f"index: {exc}") from exc

    def record_conflict(self, sop_instance_uid: str, sop_class_uid: str, aet: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO class_conflicts VALUES (?,?,?,?)",
                (sop_instance_uid, sop_class_uid, aet, time.time()),
            )

    def mark_durable(self, rows: Sequence[IndexedInstance], *, read_back: bool) -> set[str]:
        """One synchronous commit for the whole barrier; each UPDATE is keyed on the copy (UID,
        SHA-256, received_at), so a replacement stored since the caller's sync stays
        non-durable. A row already marked (by another round) counts as marked."""
        self.flush()
        marked: set[str] = set()
        with self.db.transaction(durable=True) as conn:
            for row in rows:
                key = (int(read_back), row.sop_instance_uid, row.sha256, row.received_at)
                if conn.execute(_MARK, key).rowcount:
                    marked.add(row.sop_instance_uid)
        return marked

    def mark_unsafe(self, rows: Sequence[IndexedInstance], received_by: float) -> int:
        """One synchronous commit (see the Protocol); every row of this index is this node's."""
        self.flush()
        with self.db.transaction(durable=True) as conn:
            marked = conn.execute(_UNSAFE + "received_at <= ?", (received_by,)).rowcount
            for row in rows:
                key = (row.sop_instance_uid, row.sha256, row.received_at)
                marked += conn.execute(_UNSAFE + _COPY, key).rowcount
        return int(marked)

    def non_durable(self) -> Iterator[IndexedInstance]:
        """Keyset pages in rowid order over the partial index of non-durable rows."""
        self.flush()
        last = 0
        while True:
            rows = self.db.query(
                f"SELECT rowid, {_ROW} FROM instances WHERE durable = 0 AND unsafe = 0"
                " AND rowid > ?"
                " ORDER BY rowid LIMIT ?",
                (last, LOOKUP_BATCH),
            )
            if not rows:
                return
            yield from (_indexed(row[1:]) for row in rows)
            last = rows[-1][0]

    def remove(self, sop_instance_uid: str) -> None:
        self._rows.drop(sop_instance_uid)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))

    def count(self) -> int:
        self.flush()
        return self._row_count()

    def total_bytes(self) -> int:
        self.flush()
        return int(self.db.query("SELECT coalesce(sum(size), 0) FROM instances")[0][0])

    def close(self) -> None:
        """Write what is pending, stop the filter's fill, then close every connection."""
        try:
            self._rows.close()
        finally:
            self._known.stop()
            with self._readers_lock:
                self._closed = True
                idle, self._idle_readers = self._idle_readers, []
            for reader in idle:
                reader.close()
            self.db.close()


def _columns(row: InstanceRow) -> tuple[object, ...]:
    """The values of ``_INSERT`` for a row."""
    return (
        row.sop_instance_uid,
        row.sop_class_uid,
        row.study_instance_uid,
        row.series_instance_uid,
        row.patient_id,
        row.transfer_syntax,
        row.blob,
        row.size,
        row.sha256,
        row.source_aet,
        row.received_at,
        int(row.durable),
    )
