"""What ``send`` returns: per file, per transaction, the exit status, and the JSON form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stgcmt.dicom.status import describe_status
from stgcmt.scu.dicomfiles import Skipped
from stgcmt.storage.scu_journal import (
    ABORTED,
    COMMITTED,
    FAILED,
    PENDING,
    QUEUED,
    STORE_FAILED,
    FileRow,
    ScuJournal,
    Transaction,
)

EXIT_COMMITTED = 0
EXIT_FAILED = 1
EXIT_PENDING = 2


def failure_words(row: FileRow) -> str:
    """Why a file is not committed, in words."""
    if row.state == STORE_FAILED:
        detail = row.store_error or describe_status(row.store_status)
        return f"C-STORE failed: {detail}"
    if row.state == QUEUED:
        return "not sent"
    if row.failure_reason is None:
        return "not in the report" if row.state == FAILED else row.state
    return f"Failure Reason {describe_status(row.failure_reason)}"


@dataclass
class FileResult:
    path: str
    sop_instance_uid: str
    state: str
    reason: str | None
    action: str | None
    action_note: str | None


@dataclass
class TransactionResult:
    transaction_uid: str
    journal_id: int
    state: str
    files: list[FileResult]
    error: str | None


@dataclass
class SendResult:
    journal: str
    transactions: list[TransactionResult]
    skipped: list[Skipped]

    @property
    def exit_status(self) -> int:
        """0 all committed; 1 something failed (wins over pending); 2 reports outstanding."""
        states = {tx.state for tx in self.transactions}
        if states & {FAILED, ABORTED}:
            return EXIT_FAILED
        if PENDING in states:
            return EXIT_PENDING
        return EXIT_COMMITTED

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for tx in self.transactions:
            for f in tx.files:
                totals[f.state] = totals.get(f.state, 0) + 1
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_status": self.exit_status,
            "journal": self.journal,
            "files_by_state": self.counts(),
            "transactions": [_tx_json(tx) for tx in self.transactions],
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


def _tx_json(tx: TransactionResult) -> dict[str, Any]:
    return {**tx.__dict__, "files": [f.__dict__ for f in tx.files]}


def transaction_result(journal: ScuJournal, tx: Transaction) -> TransactionResult:
    files = [
        FileResult(
            row.path,
            row.sop_instance_uid,
            row.state,
            None if row.state == COMMITTED else failure_words(row),
            row.action,
            row.action_note,
        )
        for row in journal.files(tx.id)
    ]
    return TransactionResult(tx.transaction_uid, tx.id, tx.state, files, tx.last_error)
