"""The SQLite :class:`~stgcmt.storage.interfaces.InstanceIndex` (``index.sqlite``)."""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from stgcmt.storage.interfaces import IndexedInstance, InstanceRow
from stgcmt.storage.sqlite import Database, chunked

LOOKUP_BATCH = 500

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
    durable INTEGER NOT NULL DEFAULT 0
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

_ROW = "sop_instance_uid, sop_class_uid, path, size, sha256, durable"
_INSERT = (
    "INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid, study_instance_uid,"
    " series_instance_uid, patient_id, transfer_syntax, path, size, sha256, source_aet,"
    " received_at, durable) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)


class SqliteInstanceIndex:
    """Instance rows keyed by SOP Instance UID; ``path`` holds the blob name."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)
        self.path = path

    def lookup(self, uids: Sequence[str]) -> dict[str, IndexedInstance]:
        found: dict[str, IndexedInstance] = {}
        for batch in chunked(list(uids), LOOKUP_BATCH):
            marks = ",".join("?" * len(batch))
            for row in self.db.query(
                f"SELECT {_ROW} FROM instances WHERE sop_instance_uid IN ({marks})", list(batch)
            ):
                found[row[0]] = IndexedInstance(
                    row[0], row[1], row[2], row[3], row[4], bool(row[5])
                )
        return found

    def put(self, row: InstanceRow) -> None:
        """Insert or replace; an SQLite failure becomes ``OSError`` (ENOSPC when full)."""
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    _INSERT,
                    (
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
                    ),
                )
        except sqlite3.Error as exc:
            code = errno.ENOSPC if "full" in str(exc) else errno.EIO
            raise OSError(code, f"index: {exc}") from exc

    def record_conflict(self, sop_instance_uid: str, sop_class_uid: str, aet: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO class_conflicts VALUES (?,?,?,?)",
                (sop_instance_uid, sop_class_uid, aet, time.time()),
            )

    def mark_durable(self, uids: Sequence[str]) -> None:
        with self.db.transaction(durable=True) as conn:
            for batch in chunked(list(uids), LOOKUP_BATCH):
                marks = ",".join("?" * len(batch))
                conn.execute(
                    f"UPDATE instances SET durable = 1 WHERE sop_instance_uid IN ({marks})",
                    list(batch),
                )

    def non_durable(self) -> list[IndexedInstance]:
        rows = self.db.query(f"SELECT {_ROW} FROM instances WHERE durable = 0")
        return [IndexedInstance(r[0], r[1], r[2], r[3], r[4], False) for r in rows]

    def remove(self, sop_instance_uid: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM instances")[0][0])

    def total_bytes(self) -> int:
        return int(self.db.query("SELECT coalesce(sum(size), 0) FROM instances")[0][0])

    def close(self) -> None:
        self.db.close()
