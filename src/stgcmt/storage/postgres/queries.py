"""Read-only views of a PostgreSQL archive (:class:`~stgcmt.storage.interfaces.ScpQueries`):
the whole cluster, with the node that received, verified and delivered each transaction and
what each node holds right now (its leases). Each call uses its own read-only connection, so
``stgcmt status`` is safe beside live nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from stgcmt.storage.postgres.connection import CONNECT_TIMEOUT, as_os_error, shown_url
from stgcmt.storage.postgres.schema import LATEST
from stgcmt.storage.views import Run, ScpViews

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


class PgScpQueries(ScpViews):
    """Read-only views of the archive in the database at ``url``."""

    RECENT_EXTRA = ", received_by, verified_by, delivered_by, lease_node, lease_until"
    FOUND_EXTRA = ", t.received_by, t.verified_by, t.delivered_by, t.lease_node"
    INSTANCE_EXTRA = ", node"

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = shown_url(url)

    @contextmanager
    def _journal(self, index: bool = False) -> Iterator[Run]:
        """A read-only session (the journal and the index are one database); driver errors
        leave as ``OSError``, as the services see storage failures."""
        try:
            with psycopg.connect(
                self.url,
                connect_timeout=CONNECT_TIMEOUT,
                row_factory=dict_row,
                options="-c default_transaction_read_only=on",
            ) as conn:
                yield lambda sql, params: conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise as_os_error(exc, self.shown) from exc

    def _index(self) -> AbstractContextManager[Run]:
        return self._journal()

    def _about(self) -> dict[str, Any]:
        return {"data_dir": None, "database": self.shown, "schema_version": LATEST}

    def _cluster(self, run: Run) -> dict[str, Any]:
        """What each node did."""
        return {"nodes": run(_NODES, ())}

    def instances(self) -> list[dict[str, Any]]:
        """Every index row, all columns (``path`` is the blob name), oldest first."""
        return self._journal_rows("SELECT * FROM instances ORDER BY received_at, sop_instance_uid")

    def class_conflicts(self) -> list[dict[str, Any]]:
        return self._journal_rows("SELECT * FROM class_conflicts ORDER BY received_at")

    def integrity_problems(self) -> list[str]:
        """The journal's and the index's invariants across nodes (PostgreSQL keeps its own
        pages consistent through crashes; what we check is what our writes promised)."""
        problems = []
        for what, sql in _INVARIANTS:
            found = [str(next(iter(row.values()))) for row in self._journal_rows(sql)]
            if found:
                problems.append(f"{what}: {', '.join(found[:20])}")
        return problems
