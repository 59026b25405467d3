"""Read-only views of a PostgreSQL archive (:class:`~stgcmt.storage.interfaces.ScpQueries`):
the whole cluster, with the node that received, verified and delivered each transaction and
what each node holds right now (its leases). Each call uses its own read-only connection, so
``stgcmt status`` is safe beside live nodes."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from stgcmt.storage.postgres.connection import CONNECT_TIMEOUT, as_os_error, shown_url
from stgcmt.storage.postgres.schema import LATEST
from stgcmt.storage.queries import (
    _INSTANCE_COLUMNS,
    _TX_COLUMNS,
    ATTEMPTS_SHOWN,
    ATTEMPTS_SQL,
    STATE_WORDS,
    Where,
)

_RECENT = (
    "SELECT id, transaction_uid, calling_aet, state, n_refs, n_committed, n_failed, attempts,"
    " last_error, received_at, updated_at, next_attempt_at, delivered_via, received_by,"
    " verified_by, delivered_by, lease_node, lease_until FROM transactions"
    " ORDER BY state IN ('delivered', 'given_up'), id DESC LIMIT %s"
)
_NODES = (
    "SELECT node, sum(received) AS received, sum(verified) AS verified,"
    " sum(delivered) AS delivered, sum(leased) AS leased FROM ("
    " SELECT received_by AS node, 1 AS received, 0 AS verified, 0 AS delivered, 0 AS leased"
    " FROM transactions UNION ALL"
    " SELECT verified_by, 0, 1, 0, 0 FROM transactions WHERE verified_by IS NOT NULL UNION ALL"
    " SELECT delivered_by, 0, 0, 1, 0 FROM transactions WHERE state = 'delivered' UNION ALL"
    " SELECT lease_node, 0, 0, 0, 1 FROM transactions"
    "  WHERE lease_node IS NOT NULL AND state IN ('received', 'verifying', 'report_pending')"
    ") n WHERE node IS NOT NULL GROUP BY node ORDER BY node"
)
# What must hold between the tables whatever happened to any node (crash campaign, tests).
_INVARIANTS = (
    (
        "transactions whose reference count differs from n_refs",
        "SELECT t.id FROM transactions t LEFT JOIN refs r ON r.tx_id = t.id"
        " GROUP BY t.id, t.n_refs HAVING count(r.seq) <> t.n_refs",
    ),
    (
        "delivered transactions without delivered_at or with an unverified reference",
        "SELECT t.id FROM transactions t WHERE t.state = 'delivered' AND (t.delivered_at IS NULL"
        " OR EXISTS (SELECT 1 FROM refs r WHERE r.tx_id = t.id AND r.failure_reason IS NULL))",
    ),
    (
        "states outside the journal's",
        "SELECT id FROM transactions WHERE state NOT IN"
        " ('received', 'verifying', 'report_pending', 'delivered', 'given_up')",
    ),
)


class PgScpQueries:
    """Read-only views of the archive in the database at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = shown_url(url)

    def _rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        try:
            with psycopg.connect(
                self.url,
                connect_timeout=CONNECT_TIMEOUT,
                row_factory=dict_row,
                options="-c default_transaction_read_only=on",
            ) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise as_os_error(exc, self.shown) from exc

    def status(self, limit: int = 50) -> dict[str, Any]:
        """As the SQLite status, plus ``database`` and what each node did (``nodes``)."""
        counts = {
            row["state"]: row["n"]
            for row in self._rows("SELECT state, count(*) AS n FROM transactions GROUP BY state")
        }
        instances = self._rows(
            "SELECT count(*) AS n, count(*) FILTER (WHERE durable > 0) AS durable,"
            " count(*) FILTER (WHERE unsafe > 0) AS unsafe FROM instances"
        )[0]
        return {
            "data_dir": None,
            "database": self.shown,
            "schema_version": LATEST,
            "instances": instances["n"],
            "instances_durable": instances["durable"],
            "instances_unsafe": instances["unsafe"],
            "transactions_by_state": {state: counts.get(state, 0) for state in STATE_WORDS},
            "nodes": self._rows(_NODES),
            "transactions": self._rows(_RECENT, (limit,)),
        }

    def instances(self) -> list[dict[str, Any]]:
        """Every index row, all columns (``path`` is the blob name), oldest first."""
        return self._rows("SELECT * FROM instances ORDER BY received_at, sop_instance_uid")

    def instance(self, sop_instance_uid: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT * FROM instances WHERE sop_instance_uid = %s", (sop_instance_uid,)
        )
        return rows[0] if rows else None

    def class_conflicts(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM class_conflicts ORDER BY received_at")

    def transactions(self) -> list[dict[str, Any]]:
        """Every journal transaction, all columns, oldest first."""
        return self._rows("SELECT * FROM transactions ORDER BY id")

    def active_transactions(self) -> int:
        return int(
            self._rows(
                "SELECT count(*) AS n FROM transactions"
                " WHERE state NOT IN ('delivered', 'given_up')"
            )[0]["n"]
        )

    def committed_instances(self) -> set[str]:
        rows = self._rows(
            "SELECT DISTINCT r.sop_instance_uid FROM refs r JOIN transactions t ON t.id = r.tx_id"
            " WHERE t.state = 'delivered' AND r.failure_reason = 0"
        )
        return {row["sop_instance_uid"] for row in rows}

    def integrity_problems(self) -> list[str]:
        """The journal's and the index's invariants across nodes (PostgreSQL keeps its own
        pages consistent through crashes; what we check is what our writes promised)."""
        problems = []
        for what, sql in _INVARIANTS:
            found = [str(next(iter(row.values()))) for row in self._rows(sql)]
            if found:
                problems.append(f"{what}: {', '.join(found[:20])}")
        return problems

    # -- the HTTP API's searches -------------------------------------------------------------

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
        """As the SQLite search, plus which node received, verified and delivered each."""
        where = Where()
        where.add("t.state = %s", state)
        where.add("t.calling_aet = %s", calling_aet)
        where.add("t.received_at >= %s", since)
        where.add("t.received_at < %s", until)
        where.add("t.transaction_uid = %s", transaction_uid)
        for column, value in (("patient_id", patient_id), ("study_instance_uid", study_uid)):
            where.add(
                "t.id IN (SELECT r.tx_id FROM refs r JOIN instances i"
                f" ON i.sop_instance_uid = r.sop_instance_uid WHERE i.{column} = %s)",
                value,
            )
        select = (
            f"SELECT {_TX_COLUMNS}, t.received_by, t.verified_by, t.delivered_by, t.lease_node"
            " FROM transactions t"
        )
        return self._page(where, select, limit, offset, "t.id")

    def transaction(
        self, tx_id: int, *, refs_limit: int | None = None, refs_offset: int = 0
    ) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM transactions WHERE id = %s", (tx_id,))
        if not rows:
            return None
        refs = self._rows(
            "SELECT r.seq, r.sop_class_uid, r.sop_instance_uid, r.failure_reason,"
            " i.study_instance_uid, i.patient_id, i.durable FROM refs r"
            " LEFT JOIN instances i ON i.sop_instance_uid = r.sop_instance_uid"
            " WHERE r.tx_id = %s ORDER BY r.seq LIMIT %s OFFSET %s",
            (tx_id, refs_limit, refs_offset),
        )
        attempts = self._rows(ATTEMPTS_SQL, (tx_id, ATTEMPTS_SHOWN))
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
        where = Where()
        where.add("sop_instance_uid = %s", sop_instance_uid)
        where.add("study_instance_uid = %s", study_uid)
        where.add("series_instance_uid = %s", series_uid)
        where.add("patient_id = %s", patient_id)
        where.unsafe(unsafe)
        select = f"SELECT {_INSTANCE_COLUMNS}, unsafe, node FROM instances"
        return self._page(where, select, limit, offset, "received_at")

    def peers(self) -> list[dict[str, Any]]:
        return self._rows(
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

    def _page(
        self, where: Where, select: str, limit: int, offset: int, newest: str
    ) -> dict[str, Any]:
        """``total`` rows matching, and ``items``: ``limit`` of them from ``offset``, newest
        first."""
        clause = f" WHERE {' AND '.join(where.conditions)}" if where.conditions else ""
        sql = f"{select}{clause}"
        params = tuple(where.params)
        total = self._rows(f"SELECT count(*) AS n FROM ({sql}) matching", params)[0]["n"]
        items = self._rows(
            f"{sql} ORDER BY {newest} DESC LIMIT %s OFFSET %s", (*params, limit, offset)
        )
        return {"total": total, "items": items}
