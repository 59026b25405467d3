"""The PostgreSQL :class:`~stgcmt.storage.interfaces.InstanceIndex`: one ``instances`` table
for every node of the archive, so an N-ACTION on any node is verified against what any node
stored. Each row remembers the node that wrote it; recovery after a crash re-checks only this
node's non-durable rows (another node's are re-checked, synced and marked durable by whichever
node verifies them, see docs/deployment.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import fields

from stgcmt.storage.interfaces import IndexedInstance, InstanceRow
from stgcmt.storage.postgres.connection import PgDatabase

LOOKUP_BATCH = 5000
"""UIDs per ``= ANY(%s)`` lookup: one round trip for a typical N-ACTION batch."""

_ROW = (
    "sop_instance_uid, sop_class_uid, path, size, sha256, durable, received_at, read_back, unsafe"
)
_COPIES = (
    " FROM (SELECT unnest(%s::text[]) AS uid, unnest(%s::text[]) AS sha256,"
    " unnest(%s::float8[]) AS received_at) c WHERE i.sop_instance_uid = c.uid"
    " AND i.sha256 = c.sha256 AND i.received_at = c.received_at"
)
"""The copies (UID, SHA-256, received_at) given as three arrays (:func:`_copy_arrays`)."""
_UNSAFE = "UPDATE instances i SET unsafe = 1"
_UPSERT = (
    "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_instance_uid,"
    " series_instance_uid, patient_id, transfer_syntax, path, size, sha256, source_aet,"
    " received_at, durable, node) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (sop_instance_uid) DO UPDATE SET sop_class_uid = EXCLUDED.sop_class_uid,"
    " study_instance_uid = EXCLUDED.study_instance_uid,"
    " series_instance_uid = EXCLUDED.series_instance_uid, patient_id = EXCLUDED.patient_id,"
    " transfer_syntax = EXCLUDED.transfer_syntax, path = EXCLUDED.path, size = EXCLUDED.size,"
    " sha256 = EXCLUDED.sha256, source_aet = EXCLUDED.source_aet,"
    " received_at = EXCLUDED.received_at, durable = EXCLUDED.durable, node = EXCLUDED.node,"
    " read_back = 0, unsafe = 0"
)


def _values(row: InstanceRow) -> tuple[object, ...]:
    """The row's values in its dataclass's field order, which is the order of the columns
    ``_UPSERT`` names before ``node`` (``durable`` as 0/1)."""
    return (*(getattr(row, f.name) for f in fields(InstanceRow)[:-1]), int(row.durable))


def _indexed(row: tuple) -> IndexedInstance:
    return IndexedInstance(
        row[0],
        row[1],
        row[2],
        int(row[3]),
        row[4],
        bool(row[5]),
        row[6],
        bool(row[7]),
        bool(row[8]),
    )


def _copy_arrays(rows: Sequence[IndexedInstance]) -> tuple[list[str], list[str], list[float]]:
    """The arrays :data:`_COPIES` takes."""
    return (
        [row.sop_instance_uid for row in rows],
        [row.sha256 for row in rows],
        [row.received_at for row in rows],
    )


class PgInstanceIndex:
    """Instance rows keyed by SOP Instance UID (``path`` holds the blob name), shared by the
    nodes; ``node`` is this node's name, recorded with what it writes."""

    def __init__(self, db: PgDatabase, node: str) -> None:
        self.db = db
        self.node = node

    def lookup(self, uids: Sequence[str]) -> dict[str, IndexedInstance]:
        found: dict[str, IndexedInstance] = {}
        wanted = list(uids)
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start : start + LOOKUP_BATCH]
            for row in self.db.query(
                f"SELECT {_ROW} FROM instances WHERE sop_instance_uid = ANY(%s)", (batch,)
            ):
                found[row[0]] = _indexed(row)
        return found

    def put(self, row: InstanceRow) -> None:
        """Insert or replace with a synchronous commit: the database is another machine that
        may restart on its own, and a C-STORE answered Success must still be in the index
        afterwards (its file is in the writing node's page cache until the barrier syncs it;
        ``durable`` stays 0 until then). Concurrent C-STOREs share WAL flushes (PostgreSQL's
        group commit). Failures arrive as ``OSError``."""
        with self.db.transaction() as cursor:
            cursor.execute(_UPSERT, (*_values(row), self.node))

    def flush(self) -> None:
        """Nothing to write: :meth:`put` commits each row before it returns."""

    def record_conflict(self, sop_instance_uid: str, sop_class_uid: str, aet: str) -> None:
        with self.db.transaction(durable=False) as cursor:
            cursor.execute(
                "INSERT INTO class_conflicts VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (sop_instance_uid, sop_class_uid, aet, time.time(), self.node),
            )

    def mark_durable(self, rows: Sequence[IndexedInstance], *, read_back: bool) -> set[str]:
        """One synchronous commit for the whole barrier, each row keyed on its copy (UID,
        SHA-256, received_at): a copy stored since the caller's sync, by this node or another,
        stays non-durable. A row already marked (by another round or node) counts as marked."""
        if not rows:
            return set()
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE instances i SET durable = 1, read_back = greatest(i.read_back, %s)"
                + _COPIES
                + " AND i.unsafe = 0 RETURNING i.sop_instance_uid",
                (int(read_back), *_copy_arrays(rows)),
            )
            return {uid for (uid,) in cursor.fetchall()}

    def mark_unsafe(self, rows: Sequence[IndexedInstance], received_by: float) -> int:
        """One synchronous commit: the copies named (whichever node stored them: this node's
        sync covered them) and this node's own non-durable copies up to ``received_by``
        (another node's were in its page cache, not ours)."""
        with self.db.transaction() as cursor:
            cursor.execute(
                _UNSAFE + " WHERE durable = 0 AND unsafe = 0 AND node = %s AND received_at <= %s",
                (self.node, received_by),
            )
            marked = cursor.rowcount
            cursor.execute(
                _UNSAFE + _COPIES + " AND i.durable = 0 AND i.unsafe = 0", _copy_arrays(rows)
            )
            return int(marked + cursor.rowcount)

    def non_durable(self) -> Iterator[IndexedInstance]:
        """This node's rows not yet durable (what its own crash may have cut short, what its
        durability round syncs), in keyset pages."""
        last = ""
        while True:
            rows = self.db.query(
                f"SELECT {_ROW} FROM instances WHERE durable = 0 AND unsafe = 0 AND node = %s"
                " AND sop_instance_uid > %s ORDER BY sop_instance_uid LIMIT %s",
                (self.node, last, LOOKUP_BATCH),
            )
            if not rows:
                return
            yield from (_indexed(row) for row in rows)
            last = rows[-1][0]

    def remove(self, sop_instance_uid: str) -> None:
        with self.db.transaction() as cursor:
            cursor.execute("DELETE FROM instances WHERE sop_instance_uid = %s", (sop_instance_uid,))

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM instances")[0][0])

    def total_bytes(self) -> int:
        return int(self.db.query("SELECT coalesce(sum(size), 0) FROM instances")[0][0])

    def close(self) -> None:
        self.db.close()
