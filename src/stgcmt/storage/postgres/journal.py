"""The PostgreSQL :class:`~stgcmt.storage.interfaces.ScpJournal`: the states, promises and rows
of :mod:`stgcmt.storage.scp_journal`, shared by every node of the archive.

What a cluster adds:

- **Leases.** A node works on a transaction (verifies it, delivers its report) only while it
  holds its lease: ``lease_node`` is the node, ``lease_until`` when it expires. The receiving
  node takes it with the request (no other node may report before the N-ACTION is answered),
  :meth:`PgScpJournal.claim` takes or renews it (``SELECT … FOR UPDATE SKIP LOCKED``, so two
  nodes never both get it) and each batch of verified results renews it. A node that dies
  holding a lease is replaced once the lease has expired. A failed attempt keeps the lease
  until the next attempt is due (no other node retries early); a delivery, a give-up or a
  postponement (waiting for the requester, which may come back to any node) releases it.
- **Cluster-wide duplicates.** The duplicate Transaction UID check runs under an advisory lock
  on the UID: two nodes receiving the same UID at once see each other.
- **Who did what.** ``received_by``, ``verified_by`` and ``delivered_by`` name the nodes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from stgcmt.dicom.commitment import Reference
from stgcmt.storage.postgres.connection import PgDatabase
from stgcmt.storage.scp_journal import (
    ACTIVE_STATES,
    DELIVERED,
    GIVEN_UP,
    RECEIVED,
    REPORT_PENDING,
    REQUEST_COLUMNS,
    VERIFYING,
    JournalReads,
    Transaction,
    request_row,
)

_COLUMNS = ", ".join(Transaction.__dataclass_fields__)
_ACTIVE = list(ACTIVE_STATES)


def _transaction(row: tuple) -> Transaction:
    return Transaction(*row)


class PgScpJournal(JournalReads):
    """The commitment journal in PostgreSQL; ``node`` names this node, ``lease`` is how many
    seconds a claim lasts."""

    def __init__(self, db: PgDatabase, node: str, lease: float) -> None:
        self.db = db
        self.node = node
        self.lease = lease
        self.path = db.shown

    # -- the request ---------------------------------------------------------------------------

    def record_request(
        self,
        transaction_uid: str,
        calling_aet: str,
        peer_host: str | None,
        report_assoc: str,
        references: Sequence[Reference],
    ) -> Transaction:
        """Persist an N-ACTION durably, leased to this node. A Transaction UID active anywhere
        in the cluster makes this a duplicate (its report fails every reference with 0131H)."""
        asked = (transaction_uid, calling_aet, peer_host, report_assoc)
        now = time.time()
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (transaction_uid,)
            )
            cursor.execute(
                "SELECT id FROM transactions WHERE transaction_uid = %s AND state = ANY(%s)"
                " AND duplicate_of IS NULL ORDER BY id LIMIT 1",
                (transaction_uid, _ACTIVE),
            )
            active = cursor.fetchone()
            row = request_row(asked, active[0] if active else None, len(references), now)
            cursor.execute(
                f"INSERT INTO transactions ({REQUEST_COLUMNS}, received_by, lease_node,"
                " lease_until) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (*row, self.node, self.node, now + self.lease),
            )
            tx_id = int(cursor.fetchone()[0])  # type: ignore[index]
            with cursor.copy(
                "COPY refs (tx_id, seq, sop_class_uid, sop_instance_uid) FROM STDIN"
            ) as copy:
                for seq, ref in enumerate(references):
                    copy.write_row((tx_id, seq, ref.sop_class_uid, ref.sop_instance_uid))
        return self.get(tx_id)

    # -- reading (a transaction, its references, report and attempts: JournalReads) ---------

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self.db.query(sql, params)

    def in_state(self, *states: str) -> list[Transaction]:
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM transactions WHERE state = ANY(%s) ORDER BY id",
            (list(states),),
        )
        return [_transaction(row) for row in rows]

    def active_counts(self) -> dict[str, tuple[int, int]]:
        """By state: the whole cluster's, and those ``received_by`` this node."""
        rows = self.db.query(
            "SELECT state, count(*), count(*) FILTER (WHERE received_by = %s) FROM transactions"
            " WHERE state = ANY(%s) GROUP BY state",
            (self.node, _ACTIVE),
        )
        return {state: (int(n), int(mine)) for state, n, mine in rows}

    def latest_finished(self, transaction_uid: str) -> Transaction | None:
        """The newest transaction with this UID that is delivered or given up, if any."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM transactions WHERE transaction_uid = %s"
            " AND state = ANY(%s) ORDER BY id DESC LIMIT 1",
            (transaction_uid, [DELIVERED, GIVEN_UP]),
        )
        return _transaction(rows[0]) if rows else None

    # -- leases --------------------------------------------------------------------------------

    def claim(self, tx_id: int) -> Transaction | None:
        """Take (or renew) the lease on an active transaction, durably; the fresh row, or None
        when another node holds an unexpired lease, another claim has the row locked right now,
        or the transaction is finished."""
        now = time.time()
        with self.db.transaction() as cursor:
            cursor.execute(
                f"UPDATE transactions SET lease_node = %s, lease_until = %s WHERE id = ("
                " SELECT id FROM transactions WHERE id = %s AND state = ANY(%s)"
                " AND (lease_node IS NULL OR lease_node = %s OR lease_until < %s)"
                f" FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                (self.node, now + self.lease, tx_id, _ACTIVE, self.node, now),
            )
            row = cursor.fetchone()
        return _transaction(row) if row else None

    # -- progress and promises -----------------------------------------------------------------

    def set_state(self, tx_id: int, state: str) -> None:
        with self.db.transaction(durable=False) as cursor:
            cursor.execute(
                "UPDATE transactions SET state = %s, updated_at = %s WHERE id = %s",
                (state, time.time(), tx_id),
            )

    def record_results(self, tx_id: int, results: Sequence[tuple[int, int]]) -> None:
        """Store (seq, failure reason or 0) for verified references, renewing this node's
        lease (a long verification is not taken over while it makes progress)."""
        now = time.time()
        with self.db.transaction(durable=False) as cursor:
            cursor.execute(
                "UPDATE refs SET failure_reason = r.reason FROM"
                " (SELECT unnest(%s::int[]) AS seq, unnest(%s::int[]) AS reason) r"
                " WHERE refs.tx_id = %s AND refs.seq = r.seq",
                ([seq for seq, _ in results], [reason for _, reason in results], tx_id),
            )
            cursor.execute(
                "UPDATE transactions SET lease_until = %s, updated_at = %s"
                " WHERE id = %s AND lease_node = %s",
                (now + self.lease, now, tx_id, self.node),
            )

    def finish_verification(self, tx_id: int, first_attempt_at: float) -> Transaction:
        """Count outcomes and queue the report, durably, unless another node already did (a
        transaction taken over while this node still verified it is not queued twice)."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE transactions t SET state = %s, n_committed = c.ok, n_failed = c.failed,"
                " next_attempt_at = %s, updated_at = %s, verified_by = %s FROM"
                " (SELECT count(*) FILTER (WHERE failure_reason = 0) AS ok,"
                " count(*) FILTER (WHERE failure_reason <> 0) AS failed FROM refs"
                " WHERE tx_id = %s) c WHERE t.id = %s AND t.state = ANY(%s)",
                (
                    REPORT_PENDING,
                    first_attempt_at,
                    time.time(),
                    self.node,
                    tx_id,
                    tx_id,
                    [RECEIVED, VERIFYING],
                ),
            )
        return self.get(tx_id)

    def record_failed_attempt(self, tx_id: int, error: str, next_attempt_at: float) -> None:
        """Count the attempt; this node keeps the lease until the next one is due."""
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE transactions SET attempts = attempts + 1, last_error = %s,"
                " next_attempt_at = %s, updated_at = %s, lease_until = %s WHERE id = %s",
                (error, next_attempt_at, time.time(), next_attempt_at, tx_id),
            )

    def postpone(self, tx_id: int, reason: str, next_attempt_at: float) -> None:
        """Wait without counting an attempt, releasing the lease: the requester may associate
        again with any node, and that node may then deliver."""
        with self.db.transaction(durable=False) as cursor:
            cursor.execute(
                "UPDATE transactions SET last_error = %s, next_attempt_at = %s, updated_at = %s,"
                " lease_node = NULL, lease_until = NULL WHERE id = %s",
                (reason, next_attempt_at, time.time(), tx_id),
            )

    def mark_delivered(self, tx_id: int, via: str) -> None:
        now = time.time()
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE transactions SET state = %s, attempts = attempts + 1, delivered_at = %s,"
                " delivered_via = %s, delivered_by = %s, last_error = NULL,"
                " next_attempt_at = NULL, updated_at = %s, lease_node = NULL, lease_until = NULL"
                " WHERE id = %s",
                (DELIVERED, now, via, self.node, now, tx_id),
            )

    def mark_given_up(self, tx_id: int, error: str) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE transactions SET state = %s, last_error = %s, next_attempt_at = NULL,"
                " updated_at = %s, delivered_by = %s, lease_node = NULL, lease_until = NULL"
                " WHERE id = %s",
                (GIVEN_UP, error, time.time(), self.node, tx_id),
            )

    # -- the delivery history ------------------------------------------------------------------

    def record_attempt(
        self,
        tx_id: int,
        via: str | None,
        outcome: str,
        error: str | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Add an attempt by this node to the history, without waiting for the WAL flush: the
        durable commit of the state change that follows flushes it too."""
        with self.db.transaction(durable=False) as cursor:
            cursor.execute(
                "INSERT INTO delivery_attempts (tx_id, at, node, via, outcome, error,"
                " next_attempt_at) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (tx_id, time.time(), self.node, via, outcome, error, next_attempt_at),
            )

    def close(self) -> None:
        self.db.close()
