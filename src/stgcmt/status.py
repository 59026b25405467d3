"""Read-only views of what is pending, for administrators and scripts (``stgcmt status``).

They open the databases read-only, so they are safe to run beside a live service.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .db import open_readonly

STATE_WORDS = {
    "received": "received",
    "verifying": "verifying",
    "report_pending": "report pending",
    "delivered": "delivered",
    "given_up": "given up",
}


def scp_status(data_dir: Path, limit: int = 50) -> dict[str, Any]:
    """Counts by state, the instance count, and the most recent transactions (active first)."""
    data_dir = Path(data_dir)
    journal = open_readonly(data_dir / "commitment.sqlite")
    index = open_readonly(data_dir / "index.sqlite")
    try:
        counts = dict(journal.execute("SELECT state, count(*) FROM transactions GROUP BY state"))
        rows = journal.execute(
            "SELECT id, transaction_uid, calling_aet, state, n_refs, n_committed, n_failed,"
            " attempts, last_error, received_at, updated_at, next_attempt_at, delivered_via"
            " FROM transactions ORDER BY state IN ('delivered', 'given_up'), id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        instances = index.execute("SELECT count(*), sum(durable) FROM instances").fetchone()
    finally:
        journal.close()
        index.close()
    return {
        "data_dir": str(data_dir),
        "instances": instances[0],
        "instances_durable": instances[1] or 0,
        "transactions_by_state": {state: counts.get(state, 0) for state in STATE_WORDS},
        "transactions": [dict(row) for row in rows],
    }


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_scp_status(status: dict[str, Any]) -> str:
    counts = status["transactions_by_state"]
    lines = [
        f"data dir   {status['data_dir']}",
        f"instances  {status['instances']} ({status['instances_durable']} durable)",
        "transactions  " + ", ".join(f"{STATE_WORDS[s]}: {n}" for s, n in counts.items()),
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
    return "\n".join(lines)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)
