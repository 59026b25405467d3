"""The SCP's commitment journal (``commitment.sqlite``): every acknowledged N-ACTION until its
report is delivered or explicitly given up.

A request is written with a synchronous commit *before* the N-ACTION is answered Success, so a
crash after the answer cannot lose it. States::

    received -> verifying -> report_pending -> delivered
                                            -> given_up
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stgcmt.dicom.commitment import CommitmentReport, FailedReference, Reference
from stgcmt.storage.interfaces import DeliveryAttempt, JournalTransaction
from stgcmt.storage.sqlite import Database

RECEIVED = "received"
VERIFYING = "verifying"
REPORT_PENDING = "report_pending"
DELIVERED = "delivered"
GIVEN_UP = "given_up"
ACTIVE_STATES = (RECEIVED, VERIFYING, REPORT_PENDING)
FAILED = "failed"
"""A delivery attempt's outcome when the report did not get through (else ``delivered``)."""
ATTEMPT_COLUMNS = ", ".join(DeliveryAttempt.__dataclass_fields__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_uid TEXT NOT NULL,
    calling_aet TEXT NOT NULL,
    peer_host TEXT,
    report_assoc TEXT NOT NULL,
    duplicate_of INTEGER,
    state TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    n_refs INTEGER NOT NULL,
    n_committed INTEGER,
    n_failed INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_error TEXT,
    delivered_at REAL,
    delivered_via TEXT
);
CREATE INDEX IF NOT EXISTS transactions_state ON transactions (state);
CREATE INDEX IF NOT EXISTS transactions_uid ON transactions (transaction_uid);
CREATE TABLE IF NOT EXISTS refs (
    tx_id INTEGER NOT NULL REFERENCES transactions (id),
    seq INTEGER NOT NULL,
    sop_class_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    failure_reason INTEGER,
    PRIMARY KEY (tx_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delivery_attempts (
    id INTEGER PRIMARY KEY,
    tx_id INTEGER NOT NULL REFERENCES transactions (id),
    at REAL NOT NULL,
    node TEXT,
    via TEXT,
    outcome TEXT NOT NULL,
    error TEXT,
    next_attempt_at REAL
);
CREATE INDEX IF NOT EXISTS delivery_attempts_tx ON delivery_attempts (tx_id, id)
"""
# A journal written before delivery_attempts existed gets the table when it is opened (every
# statement above is IF NOT EXISTS).

BATCH = 1000


@dataclass(frozen=True)
class Transaction(JournalTransaction):
    """An N-ACTION as the SCP journal holds it (shared columns in :class:`JournalTransaction`)."""

    calling_aet: str
    peer_host: str | None
    report_assoc: str
    duplicate_of: int | None
    received_at: float
    n_refs: int
    attempts: int
    next_attempt_at: float | None
    delivered_at: float | None
    delivered_via: str | None


_COLUMNS = ", ".join(Transaction.__dataclass_fields__)


def in_sqlite_marks(sql: str) -> str:
    """SQL written once for both backends, with psycopg's ``%s`` placeholders, in SQLite's."""
    return sql.replace("%s", "?")


REQUEST_COLUMNS = (
    "transaction_uid, calling_aet, peer_host, report_assoc, duplicate_of, state, received_at,"
    " updated_at, n_refs"
)
"""What a new request writes in every journal (:func:`request_row`)."""


Request = tuple[str, str, str | None, str]
"""An N-ACTION as the requester asked it: Transaction UID, calling AE, its host, and how to
reach it with the report."""


def request_row(
    asked: Request, duplicate_of: int | None, n_refs: int, now: float
) -> tuple[object, ...]:
    """The columns every journal writes for a new request, in :data:`REQUEST_COLUMNS` order:
    received now, not yet verified."""
    return (*asked, duplicate_of, RECEIVED, now, now, n_refs)


class JournalReads(ABC):
    """The reads both journals make the same way, written once with ``%s`` placeholders: a
    transaction, its references in batches, its report and its delivery attempts."""

    @abstractmethod
    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Rows (tuples) of one read; ``sql`` as this module writes it."""

    def get(self, tx_id: int) -> Transaction:
        rows = self._query(f"SELECT {_COLUMNS} FROM transactions WHERE id = %s", (tx_id,))
        return Transaction(*rows[0])

    def reference_batches(self, tx_id: int) -> Iterator[list[tuple[int, Reference]]]:
        """The references of a transaction in bounded batches, with their sequence numbers."""
        last = -1
        while True:
            rows = self._query(
                "SELECT seq, sop_class_uid, sop_instance_uid FROM refs"
                " WHERE tx_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (tx_id, last, BATCH),
            )
            if not rows:
                return
            yield [(row[0], Reference(row[1], row[2])) for row in rows]
            last = rows[-1][0]

    def report(self, tx: Transaction, retrieve_ae_title: str) -> CommitmentReport:
        report = CommitmentReport(tx.transaction_uid, retrieve_ae_title=retrieve_ae_title)
        for class_uid, instance_uid, reason in self._query(
            "SELECT sop_class_uid, sop_instance_uid, failure_reason FROM refs"
            " WHERE tx_id = %s ORDER BY seq",
            (tx.id,),
        ):
            if reason == 0:
                report.committed.append(Reference(class_uid, instance_uid))
            else:
                report.failed.append(FailedReference(class_uid, instance_uid, reason))
        return report

    def attempts(self, tx_id: int) -> list[DeliveryAttempt]:
        """The transaction's delivery attempts, oldest first."""
        rows = self._query(
            f"SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE tx_id = %s ORDER BY id",
            (tx_id,),
        )
        return [DeliveryAttempt(*row) for row in rows]


class CommitmentJournal(JournalReads):
    def __init__(self, path: Path) -> None:
        # Commits that make a promise (the request, the verdict, the delivery) are durable;
        # progress in between (states, per-batch results) need not be.
        self.db = Database(path, SCHEMA)
        self.path = path

    def record_request(
        self,
        transaction_uid: str,
        calling_aet: str,
        peer_host: str | None,
        report_assoc: str,
        references: Sequence[Reference],
    ) -> Transaction:
        """Persist an N-ACTION durably. A Transaction UID still active in the journal makes
        this a duplicate: it is kept, and its report fails every reference with 0131H."""
        asked = (transaction_uid, calling_aet, peer_host, report_assoc)
        now = time.time()
        with self.db.transaction(durable=True) as conn:
            active = conn.execute(
                "SELECT id FROM transactions WHERE transaction_uid = ? AND state IN (?,?,?)"
                " AND duplicate_of IS NULL",
                (transaction_uid, *ACTIVE_STATES),
            ).fetchone()
            cursor = conn.execute(
                f"INSERT INTO transactions ({REQUEST_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                request_row(asked, active[0] if active else None, len(references), now),
            )
            tx_id = cursor.lastrowid
            conn.executemany(
                "INSERT INTO refs (tx_id, seq, sop_class_uid, sop_instance_uid) VALUES (?,?,?,?)",
                (
                    (tx_id, seq, r.sop_class_uid, r.sop_instance_uid)
                    for seq, r in enumerate(references)
                ),
            )
        return self.get(int(tx_id))  # type: ignore[arg-type]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self.db.query(in_sqlite_marks(sql), params)

    def in_state(self, *states: str) -> list[Transaction]:
        marks = ",".join("?" * len(states))
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM transactions WHERE state IN ({marks}) ORDER BY id", states
        )
        return [Transaction(*row) for row in rows]

    def active_counts(self) -> dict[str, tuple[int, int]]:
        """By state; this node received every one (it is the only node)."""
        rows = self.db.query(
            "SELECT state, count(*) FROM transactions WHERE state IN (?,?,?) GROUP BY state",
            ACTIVE_STATES,
        )
        return {state: (n, n) for state, n in rows}

    def latest_finished(self, transaction_uid: str) -> Transaction | None:
        """The newest transaction with this UID that is delivered or given up, if any."""
        rows = self.db.query(
            "SELECT id FROM transactions WHERE transaction_uid = ? AND state IN (?, ?)"
            " ORDER BY id DESC LIMIT 1",
            (transaction_uid, DELIVERED, GIVEN_UP),
        )
        return self.get(rows[0][0]) if rows else None

    def claim(self, tx_id: int) -> Transaction | None:
        """The fresh row of an active transaction this node may work on, None once it is
        finished. One node owns the whole SQLite journal, so there is no lease to take (the
        PostgreSQL journal leases it, see :mod:`stgcmt.storage.postgres.journal`)."""
        tx = self.get(tx_id)
        return tx if tx.state in ACTIVE_STATES else None

    def set_state(self, tx_id: int, state: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE transactions SET state = ?, updated_at = ? WHERE id = ?",
                (state, time.time(), tx_id),
            )

    def record_results(self, tx_id: int, results: Sequence[tuple[int, int]]) -> None:
        """Store (seq, failure reason or 0) for verified references: one UPDATE per run of
        consecutive sequence numbers with the same reason (a batch of 1,000 committed
        references is one statement, not 1,000)."""
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE refs SET failure_reason = ? WHERE tx_id = ? AND seq BETWEEN ? AND ?",
                ((reason, tx_id, first, last) for first, last, reason in runs(results)),
            )

    def finish_verification(self, tx_id: int, first_attempt_at: float) -> Transaction:
        """Count outcomes and queue the report, durably: from here on only delivery remains."""
        with self.db.transaction(durable=True) as conn:
            committed, failed = conn.execute(
                "SELECT sum(failure_reason = 0), sum(failure_reason != 0) FROM refs"
                " WHERE tx_id = ?",
                (tx_id,),
            ).fetchone()
            conn.execute(
                "UPDATE transactions SET state = ?, n_committed = ?, n_failed = ?,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (REPORT_PENDING, committed or 0, failed or 0, first_attempt_at, time.time(), tx_id),
            )
        return self.get(tx_id)

    def record_failed_attempt(self, tx_id: int, error: str, next_attempt_at: float) -> None:
        with self.db.transaction(durable=True) as conn:
            conn.execute(
                "UPDATE transactions SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (error, next_attempt_at, time.time(), tx_id),
            )

    def postpone(self, tx_id: int, reason: str, next_attempt_at: float) -> None:
        """Wait without counting an attempt (e.g. for the requester to associate again)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE transactions SET last_error = ?, next_attempt_at = ?, updated_at = ?"
                " WHERE id = ?",
                (reason, next_attempt_at, time.time(), tx_id),
            )

    def mark_delivered(self, tx_id: int, via: str) -> None:
        now = time.time()
        with self.db.transaction(durable=True) as conn:
            conn.execute(
                "UPDATE transactions SET state = ?, attempts = attempts + 1, delivered_at = ?,"
                " delivered_via = ?, last_error = NULL, next_attempt_at = NULL, updated_at = ?"
                " WHERE id = ?",
                (DELIVERED, now, via, now, tx_id),
            )

    def mark_given_up(self, tx_id: int, error: str) -> None:
        with self.db.transaction(durable=True) as conn:
            conn.execute(
                "UPDATE transactions SET state = ?, last_error = ?, next_attempt_at = NULL,"
                " updated_at = ? WHERE id = ?",
                (GIVEN_UP, error, time.time(), tx_id),
            )

    def record_attempt(
        self,
        tx_id: int,
        via: str | None,
        outcome: str,
        error: str | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Add an attempt to the history; one node owns this journal, so ``node`` is NULL.
        Committed with synchronous=NORMAL: the durable commit of the state change that
        follows syncs the write-ahead log, this row included."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO delivery_attempts (tx_id, at, via, outcome, error, next_attempt_at)"
                " VALUES (?,?,?,?,?,?)",
                (tx_id, time.time(), via, outcome, error, next_attempt_at),
            )

    def close(self) -> None:
        self.db.close()


def runs(results: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
    """(first seq, last seq, reason) of each run of consecutive sequence numbers (in the
    order given) that share a reason."""
    run: list[int] = []
    for seq, reason in results:
        if run and seq == run[1] + 1 and reason == run[2]:
            run[1] = seq
            continue
        if run:
            yield run[0], run[1], run[2]
        run = [seq, seq, reason]
    if run:
        yield run[0], run[1], run[2]
