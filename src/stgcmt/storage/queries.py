"""Read-only views of what is pending, for administrators and scripts (``stgcmt status``).

They open the databases read-only, so they are safe to run beside a live service.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stgcmt.dicom.status import describe_status
from stgcmt.storage.scp_journal import in_sqlite_marks
from stgcmt.storage.sqlite import open_readonly
from stgcmt.storage.views import STATE_WORDS, Run, ScpViews, Where


class SqliteScpQueries(ScpViews):
    """Read-only views of an SCP data dir (``index.sqlite`` and ``commitment.sqlite``): each
    call opens the databases read-only and closes them again."""

    INSTANCES = "idx.instances"
    NO_LIMIT = -1

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.index_path = self.data_dir / "index.sqlite"
        self.journal_path = self.data_dir / "commitment.sqlite"

    @contextmanager
    def _journal(self, index: bool = False) -> Iterator[Run]:
        """The journal, read-only; ``index``: with the index attached read-only as ``idx``."""
        conn = open_readonly(self.journal_path)
        try:
            if index:
                conn.execute("ATTACH DATABASE ? AS idx", (f"file:{self.index_path}?mode=ro",))
            yield _runner(conn)
        finally:
            conn.close()

    @contextmanager
    def _index(self) -> Iterator[Run]:
        conn = open_readonly(self.index_path)
        try:
            yield _runner(conn)
        finally:
            conn.close()

    def _about(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir)}

    def _unsafe_column(self, run: Run) -> str:
        """``unsafe``, or ``0`` for an index an older version made and no SCP has opened since
        (the column is added on open): ``stgcmt status`` works beside an SCP not yet upgraded."""
        columns = {row["name"] for row in run("PRAGMA table_info(instances)", ())}
        return "unsafe" if "unsafe" in columns else "0"

    def instances(self) -> list[dict[str, Any]]:
        """Every index row, all columns (``path`` is the blob name)."""
        return _rows(self.index_path, "SELECT * FROM instances ORDER BY rowid")

    def class_conflicts(self) -> list[dict[str, Any]]:
        return _rows(self.index_path, "SELECT * FROM class_conflicts ORDER BY rowid")

    def integrity_problems(self) -> list[str]:
        return _integrity(self.index_path) + _integrity(self.journal_path)


def _runner(conn: sqlite3.Connection) -> Run:
    """Statements written with ``%s`` placeholders run on ``conn``, rows as dicts."""

    def run(sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in conn.execute(in_sqlite_marks(sql), params)]

    return run


def scp_status(data_dir: Path, limit: int = 50) -> dict[str, Any]:
    """Counts by state, the instance count, and the most recent transactions (active first)."""
    return SqliteScpQueries(data_dir).status(limit)


def _rows(path: Path, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    conn = open_readonly(path)
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def _integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check``'s findings for one database, each prefixed by its name."""
    rows = _rows(path, "PRAGMA integrity_check")
    found = [str(next(iter(row.values()))) for row in rows]
    return [] if found == ["ok"] else [f"{path.name}: {problem}" for problem in found]


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_scp_status(status: dict[str, Any]) -> str:
    counts = status["transactions_by_state"]
    database = status.get("database")
    lines = [
        f"database   {database}" if database else f"data dir   {status['data_dir']}",
        f"instances  {status['instances']} ({status['instances_durable']} durable,"
        f" {status['instances_unsafe']} unsafe)",
        *_unsafe_advice(status["instances_unsafe"]),
        "transactions  " + ", ".join(f"{STATE_WORDS[s]}: {n}" for s, n in counts.items()),
        *_node_lines(status.get("nodes", [])),
    ]
    if status["transactions"]:
        lines.append("")
        lines.append(
            f"{'#':>5}  {'state':<14} {'from':<16} {'refs':>6} {'ok':>6} {'failed':>6}"
            f" {'tries':>5}  {'received':<19}  transaction UID / last error"
        )
    for tx in status["transactions"]:
        lines.append(
            f"{tx['id']:>5}  {STATE_WORDS[tx['state']]:<14} {tx['calling_aet']:<16}"
            f" {tx['n_refs']:>6} {_dash(tx['n_committed']):>6} {_dash(tx['n_failed']):>6}"
            f" {tx['attempts']:>5}  {_when(tx['received_at']):<19}  {tx['transaction_uid']}"
        )
        if tx["last_error"] and tx["state"] != "delivered":
            retry = f" (next try {_when(tx['next_attempt_at'])})" if tx["next_attempt_at"] else ""
            lines.append(f"{'':>7}last error: {tx['last_error']}{retry}")
        if "received_by" in tx:
            lines.append(f"{'':>7}{_by_nodes(tx)}")
    return "\n".join(lines)


def _unsafe_advice(unsafe: int) -> list[str]:
    """What the administrator does about unsafe copies: the modality sends them again (a new
    C-STORE replaces such a copy, identical bytes too)."""
    if not unsafe:
        return []
    copies = "copy" if unsafe == 1 else "copies"
    return [
        f"           {unsafe} {copies} unsafe after a failed sync: have the modality send them"
        " again (GET /api/v1/instances?unsafe=true lists them)"
    ]


def _node_lines(nodes: list[dict[str, Any]]) -> list[str]:
    """What each node of a cluster did (PostgreSQL status only)."""
    return [
        f"node       {n['node']}: received {n['received']}, verified {n['verified']},"
        f" delivered {n['delivered']}, holding {n['leased']}"
        for n in nodes
    ]


def _by_nodes(tx: dict[str, Any]) -> str:
    """Which node received, verified and delivered a transaction, and who holds it now."""
    finished = "given up" if tx["state"] == "given_up" else "delivered"
    done = [
        f"{what} by {tx[key]}"
        for what, key in (
            ("received", "received_by"),
            ("verified", "verified_by"),
            (finished, "delivered_by"),
        )
        if tx.get(key)
    ]
    if tx.get("lease_node") and tx["state"] not in ("delivered", "given_up"):
        done.append(f"held by {tx['lease_node']} until {_when(tx['lease_until'])}")
    return ", ".join(done)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


SCU_TX_STATES = ("storing", "pending", "committed", "failed", "aborted")


class SqliteScuQueries:
    """Read-only views of an SCU journal."""

    def __init__(self, journal_path: Path) -> None:
        self.journal_path = Path(journal_path)

    def status(self, limit: int = 50) -> dict[str, Any]:
        """Counts by state, and the most recent transactions (pending first) with every
        file's state, Failure Reason and what was done with it."""
        conn = open_readonly(self.journal_path)
        try:
            counts = dict(conn.execute("SELECT state, count(*) FROM transactions GROUP BY state"))
            file_counts = dict(conn.execute("SELECT state, count(*) FROM files GROUP BY state"))
            rows = conn.execute(
                "SELECT id, transaction_uid, local_aet, archive, state, on_commit, move_dir,"
                " n_files, n_committed, n_failed, created_at, requested_at, reported_at,"
                " report_via, last_error FROM transactions ORDER BY state != 'pending', id DESC"
                " LIMIT ?",
                (limit,),
            ).fetchall()
            transactions = [
                dict(row)
                | {
                    "files": [
                        dict(f)
                        for f in conn.execute(
                            "SELECT path, sop_instance_uid, state, store_status, store_error,"
                            " failure_reason, action, action_note FROM files WHERE tx_id = ?"
                            " ORDER BY seq",
                            (row["id"],),
                        )
                    ]
                }
                for row in rows
            ]
        finally:
            conn.close()
        return {
            "journal": str(self.journal_path),
            "transactions_by_state": {state: counts.get(state, 0) for state in SCU_TX_STATES},
            "files_by_state": file_counts,
            "transactions": transactions,
        }

    def transactions(self) -> list[dict[str, Any]]:
        return _rows(self.journal_path, "SELECT * FROM transactions ORDER BY id")

    def due_actions(self) -> int:
        """Committed files whose delete/move is not done yet."""
        rows = _rows(self.journal_path, "SELECT count(*) AS n FROM files WHERE action = 'due'")
        return int(rows[0]["n"])

    def integrity_problems(self) -> list[str]:
        return _integrity(self.journal_path)

    def find_transactions(
        self,
        *,
        state: str | None = None,
        archive_aet: str | None = None,
        since: float | None = None,
        until: float | None = None,
        transaction_uid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Transactions matching every filter given, newest first: ``total`` and a page."""
        where = Where()
        where.add("state = %s", state)
        where.add("archive_aet = %s", archive_aet)
        where.add("created_at >= %s", since)
        where.add("created_at < %s", until)
        where.add("transaction_uid = %s", transaction_uid)
        conn = open_readonly(self.journal_path)
        try:
            return where.page(_runner(conn), "SELECT * FROM transactions", limit, offset, "id")
        finally:
            conn.close()

    def transaction(self, tx_id: int) -> dict[str, Any] | None:
        """One transaction with every file: state, C-STORE status, Failure Reason, action."""
        conn = open_readonly(self.journal_path)
        try:
            row = conn.execute("SELECT * FROM transactions WHERE id = ?", (tx_id,)).fetchone()
            if row is None:
                return None
            files = conn.execute(
                "SELECT seq, path, sop_class_uid, sop_instance_uid, state, store_status,"
                " store_error, failure_reason, action, action_note FROM files WHERE tx_id = ?"
                " ORDER BY seq",
                (tx_id,),
            ).fetchall()
        finally:
            conn.close()
        return dict(row) | {"files": [dict(f) for f in files]}

    def peers(self) -> list[dict[str, Any]]:
        """Each archive the journal sent to: transactions, pending ones, the last sending and
        report, and the last error."""
        return _rows(
            self.journal_path,
            "SELECT archive_aet, archive_host, archive_port, count(*) AS transactions,"
            " sum(state = 'pending') AS pending, max(created_at) AS last_sent_at,"
            " max(reported_at) AS last_report_at,"
            " (SELECT last_error FROM transactions e WHERE e.archive_aet IS t.archive_aet"
            "  AND e.last_error IS NOT NULL ORDER BY e.updated_at DESC LIMIT 1) AS last_error"
            " FROM transactions t GROUP BY archive_aet, archive_host, archive_port"
            " ORDER BY archive_aet",
        )


def scu_status(journal_path: Path, limit: int = 50) -> dict[str, Any]:
    """The SCU journal: counts by state, and the most recent transactions (pending first) with
    every file's state, Failure Reason and what was done with it."""
    return SqliteScuQueries(journal_path).status(limit)


def format_scu_status(status: dict[str, Any], files_shown: int = 20) -> str:
    """Transactions, then under each the files that are not (yet) committed."""
    counts = status["transactions_by_state"]
    lines = [
        f"journal  {status['journal']}",
        "transactions  " + ", ".join(f"{s}: {n}" for s, n in counts.items()),
        "files         " + ", ".join(f"{s}: {n}" for s, n in status["files_by_state"].items()),
    ]
    for tx in status["transactions"]:
        lines.append("")
        lines.append(
            f"#{tx['id']} {tx['state']:<9} {tx['transaction_uid']} to {tx['archive']} as"
            f" {tx['local_aet']}: {tx['n_files']} files, {_dash(tx['n_committed'])} committed,"
            f" {_dash(tx['n_failed'])} failed; on commit {tx['on_commit']};"
            f" requested {_when(tx['requested_at'])}, reported {_when(tx['reported_at'])}"
        )
        if tx["last_error"]:
            lines.append(f"    last error: {tx['last_error']}")
        by_state: dict[str, int] = {}
        for f in tx["files"]:
            by_state[f["state"]] = by_state.get(f["state"], 0) + 1
        lines.append("    files: " + ", ".join(f"{n} {st}" for st, n in sorted(by_state.items())))
        lines.extend(_scu_file_lines(tx["files"], files_shown))
    return "\n".join(lines)


def _scu_file_lines(files: list[dict[str, Any]], shown: int) -> list[str]:
    open_files = [f for f in files if f["state"] != "committed" or f["action"] == "due"]
    lines = []
    for f in open_files[:shown]:
        if f["failure_reason"] is not None:
            why = describe_status(f["failure_reason"])
        else:
            why = f["store_error"] or f["action_note"] or ""
        action = " (delete/move due)" if f["action"] == "due" else ""
        lines.append(f"    {f['state']:<12} {f['path']}  {why}{action}".rstrip())
    if len(open_files) > shown:
        lines.append(f"    ... {len(open_files) - shown} more (see --json)")
    return lines
