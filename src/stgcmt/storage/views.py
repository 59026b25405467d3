"""The SCP's read-only views (:class:`~stgcmt.storage.interfaces.ScpQueries`), written once for
both backends: the filters of the searches, their paging, the counts and the shape of each row.

A backend supplies only what really differs between SQLite and PostgreSQL: how it opens a
read-only connection (SQLite: the files, the index attached to the journal; PostgreSQL: one
read-only session for the whole cluster), the ``?`` SQLite wants where the SQL here says ``%s``
(:func:`~stgcmt.storage.scp_journal.in_sqlite_marks`), and the columns only a cluster has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from stgcmt.storage.scp_journal import ATTEMPT_COLUMNS

Rows = list[dict[str, Any]]
Run = Callable[[str, Sequence[Any]], Rows]
"""Runs one statement (``%s`` placeholders) on an open read-only connection: its rows, as
dicts keyed by column name."""

STATE_WORDS = {
    "received": "received",
    "verifying": "verifying",
    "report_pending": "report pending",
    "delivered": "delivered",
    "given_up": "given up",
}

ATTEMPTS_SHOWN = 100
"""Delivery attempts one transaction's view lists (the newest; its ``attempts`` counts all)."""
ATTEMPTS_SQL = (
    f"SELECT {ATTEMPT_COLUMNS} FROM (SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts"
    " WHERE tx_id = %s ORDER BY id DESC LIMIT %s) newest ORDER BY id"
)
"""A transaction's newest attempts, oldest first."""

TX_COLUMNS = (
    "t.id, t.transaction_uid, t.calling_aet, t.peer_host, t.state, t.n_refs, t.n_committed,"
    " t.n_failed, t.attempts, t.last_error, t.received_at, t.updated_at, t.next_attempt_at,"
    " t.delivered_at, t.delivered_via, t.duplicate_of"
)
"""A transaction as the search lists it."""
INSTANCE_COLUMNS = (
    "sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, patient_id,"
    " transfer_syntax, size, source_aet, received_at, durable"
)
"""An index row as the search lists it (no blob name, no checksum)."""
_RECENT_COLUMNS = (
    "id, transaction_uid, calling_aet, state, n_refs, n_committed, n_failed, attempts,"
    " last_error, received_at, updated_at, next_attempt_at, delivered_via"
)
_ACTIVE_FIRST = "state IN ('delivered', 'given_up'), id DESC"
_PEERS = (
    "SELECT calling_aet, count(*) AS transactions, max(received_at) AS last_request_at,"
    " count(*) FILTER (WHERE state = 'report_pending') AS reports_pending,"
    " count(*) FILTER (WHERE state = 'given_up') AS reports_given_up,"
    " max(delivered_at) AS last_delivered_at,"
    " min(next_attempt_at) FILTER (WHERE state = 'report_pending') AS next_attempt_at,"
    " (SELECT last_error FROM transactions e WHERE e.calling_aet = t.calling_aet"
    "  AND e.last_error IS NOT NULL AND e.state <> 'delivered'"
    "  ORDER BY e.updated_at DESC LIMIT 1) AS last_error"
    " FROM transactions t GROUP BY calling_aet ORDER BY calling_aet"
)
"""Per calling AE (aggregate FILTER: PostgreSQL, and SQLite since 3.30)."""


class Where:
    """The WHERE clause of a search: conditions for the filters given (None: no filter)."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, value: Any) -> None:
        if value is not None:
            self.conditions.append(condition)
            self.params.append(value)

    def unsafe(self, value: bool | None, column: str = "unsafe") -> None:
        """The unsafe filter. An unsafe copy is never durable: saying so lets the partial index
        of non-durable rows find them without reading the whole index (the metrics gauge asks
        at every scrape)."""
        if value is not None:
            self.conditions.append(f"durable = 0 AND {column} = 1" if value else f"{column} = 0")

    def page(self, run: Run, select: str, limit: int, offset: int, newest: str) -> dict[str, Any]:
        """``total`` rows matching, and ``items``: ``limit`` of them from ``offset``, newest
        first (``run`` is the open connection, so both reads see the same database)."""
        clause = f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
        sql = f"{select}{clause}"
        total = run(f"SELECT count(*) AS n FROM ({sql}) matching", self.params)[0]["n"]
        items = run(
            f"{sql} ORDER BY {newest} DESC LIMIT %s OFFSET %s", [*self.params, limit, offset]
        )
        return {"total": total, "items": items}


class ScpViews(ABC):
    """The read-only views both backends answer with the same SQL; the class attributes and
    the abstract methods are what a backend says about its dialect."""

    INSTANCES = "instances"
    """The index's table as a journal connection opened with ``index=True`` names it."""
    NO_LIMIT: int | None = None
    """The LIMIT that means all rows (PostgreSQL: NULL; SQLite: -1)."""
    RECENT_EXTRA = ""
    """Columns the status's recent transactions add (a cluster: who did what)."""
    FOUND_EXTRA = ""
    """Columns the transaction search adds (``t.`` prefixed)."""
    INSTANCE_EXTRA = ""
    """Columns the instance search adds."""

    @abstractmethod
    def _journal(self, index: bool = False) -> AbstractContextManager[Run]:
        """A read-only connection to the journal; ``index``: reaching the index's table too
        (as :attr:`INSTANCES`)."""

    @abstractmethod
    def _index(self) -> AbstractContextManager[Run]:
        """A read-only connection to the instance index."""

    @abstractmethod
    def _about(self) -> dict[str, Any]:
        """Where the status was read (the data dir, or the database), its first keys."""

    def _cluster(self, run: Run) -> dict[str, Any]:
        """What the status adds about the nodes of a cluster (one node: nothing)."""
        return {}

    def _unsafe_column(self, run: Run) -> str:
        """The index's unsafe column, or an expression standing in for it."""
        return "unsafe"

    def _journal_rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._journal() as run:
            return run(sql, params)

    def status(self, limit: int = 50) -> dict[str, Any]:
        """Counts by state, the instance counts (all, durable, unsafe), and the most recent
        transactions (active first)."""
        with self._journal() as run:
            counts = {
                row["state"]: row["n"]
                for row in run("SELECT state, count(*) AS n FROM transactions GROUP BY state", ())
            }
            recent = run(
                f"SELECT {_RECENT_COLUMNS}{self.RECENT_EXTRA} FROM transactions"
                f" ORDER BY {_ACTIVE_FIRST} LIMIT %s",
                (limit,),
            )
            cluster = self._cluster(run)
        with self._index() as run:
            instances = run(
                "SELECT count(*) AS n, count(*) FILTER (WHERE durable > 0) AS durable,"
                f" count(*) FILTER (WHERE {self._unsafe_column(run)} > 0) AS unsafe"
                " FROM instances",
                (),
            )[0]
        return {
            **self._about(),
            "instances": instances["n"],
            "instances_durable": instances["durable"],
            "instances_unsafe": instances["unsafe"],
            "transactions_by_state": {state: counts.get(state, 0) for state in STATE_WORDS},
            **cluster,
            "transactions": recent,
        }

    def instance(self, sop_instance_uid: str) -> dict[str, Any] | None:
        with self._index() as run:
            rows = run("SELECT * FROM instances WHERE sop_instance_uid = %s", (sop_instance_uid,))
        return rows[0] if rows else None

    def transactions(self) -> list[dict[str, Any]]:
        """Every journal transaction, all columns, oldest first."""
        return self._journal_rows("SELECT * FROM transactions ORDER BY id")

    def active_transactions(self) -> int:
        rows = self._journal_rows(
            "SELECT count(*) AS n FROM transactions WHERE state NOT IN ('delivered', 'given_up')"
        )
        return int(rows[0]["n"])

    def committed_instances(self) -> set[str]:
        rows = self._journal_rows(
            "SELECT DISTINCT r.sop_instance_uid FROM refs r JOIN transactions t ON t.id = r.tx_id"
            " WHERE t.state = 'delivered' AND r.failure_reason = 0"
        )
        return {row["sop_instance_uid"] for row in rows}

    def find_transactions(
        self,
        *,
        state: str | None = None,
        calling_aet: str | None = None,
        since: float | None = None,
        until: float | None = None,
        transaction_uid: str | None = None,
        patient_id: str | None = None,
        study_uid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Transactions matching every filter given, newest first: ``total`` and one page of
        ``items``. Patient ID and Study UID match the references' instances in the index."""
        where = Where()
        where.add("t.state = %s", state)
        where.add("t.calling_aet = %s", calling_aet)
        where.add("t.received_at >= %s", since)
        where.add("t.received_at < %s", until)
        where.add("t.transaction_uid = %s", transaction_uid)
        for column, value in (("patient_id", patient_id), ("study_instance_uid", study_uid)):
            where.add(
                f"t.id IN (SELECT r.tx_id FROM refs r JOIN {self.INSTANCES} i"
                f" ON i.sop_instance_uid = r.sop_instance_uid WHERE i.{column} = %s)",
                value,
            )
        select = f"SELECT {TX_COLUMNS}{self.FOUND_EXTRA} FROM transactions t"
        with self._journal(index=True) as run:
            return where.page(run, select, limit, offset, "t.id")

    def transaction(
        self, tx_id: int, *, refs_limit: int | None = None, refs_offset: int = 0
    ) -> dict[str, Any] | None:
        """One transaction, all columns, with its references (Failure Reason, and the index's
        Study UID, Patient ID and durable flag when it holds the instance), ``refs_limit`` of
        them (None: all) from ``refs_offset``, and its newest delivery attempts."""
        limit = self.NO_LIMIT if refs_limit is None else refs_limit
        with self._journal(index=True) as run:
            rows = run("SELECT * FROM transactions WHERE id = %s", (tx_id,))
            if not rows:
                return None
            refs = run(
                "SELECT r.seq, r.sop_class_uid, r.sop_instance_uid, r.failure_reason,"
                f" i.study_instance_uid, i.patient_id, i.durable FROM refs r LEFT JOIN"
                f" {self.INSTANCES} i ON i.sop_instance_uid = r.sop_instance_uid"
                " WHERE r.tx_id = %s ORDER BY r.seq LIMIT %s OFFSET %s",
                (tx_id, limit, refs_offset),
            )
            attempts = run(ATTEMPTS_SQL, (tx_id, ATTEMPTS_SHOWN))
        return rows[0] | {"references": refs, "delivery_attempts": attempts}

    def find_instances(
        self,
        *,
        sop_instance_uid: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        patient_id: str | None = None,
        unsafe: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Index rows matching every filter given, newest first (``durable``: on stable
        storage, verified by a commitment; ``unsafe``: a sync failed before it was durable, the
        modality must send it again)."""
        where = Where()
        where.add("sop_instance_uid = %s", sop_instance_uid)
        where.add("study_instance_uid = %s", study_uid)
        where.add("series_instance_uid = %s", series_uid)
        where.add("patient_id = %s", patient_id)
        with self._index() as run:
            column = self._unsafe_column(run)
            where.unsafe(unsafe, column)
            select = f"SELECT {INSTANCE_COLUMNS}, {column} AS unsafe{self.INSTANCE_EXTRA}"
            return where.page(run, f"{select} FROM instances", limit, offset, "received_at")

    def peers(self) -> list[dict[str, Any]]:
        """Each calling AE the journal knows: transactions, reports pending, the last request,
        the last delivery error and the next attempt of its pending reports."""
        return self._journal_rows(_PEERS)
