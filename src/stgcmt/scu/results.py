"""What ``send`` returns: per file, per transaction, the exit status, and the JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
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
EXIT_ERROR = 3
"""Usage or connection error: the run could not go on (nothing is deleted)."""

NO_COMMITMENT = "the archive does not support Storage Commitment (no report)"
"""Why the files of a transaction whose archive rejected the Storage Commitment context are
not committed (the journal's ``last_error`` starts with it)."""


def failure_words(row: FileRow, tx: Transaction | None = None) -> str:
    """Why a file is not committed, in words; ``tx`` (its transaction) tells a file left out
    of a report from one for which no report came at all."""
    if row.state == STORE_FAILED:
        detail = row.store_error or describe_status(row.store_status)
        return f"C-STORE failed: {detail}"
    if row.state == QUEUED:
        return "not sent"
    if row.state == PENDING:
        return "no report yet"
    if row.state == ABORTED:
        return f"aborted: {tx.last_error}" if tx and tx.last_error else "aborted"
    if row.failure_reason is not None:
        return f"Failure Reason {describe_status(row.failure_reason)}"
    if tx is not None and tx.reported_at is None:
        error = tx.last_error or "commitment was not requested"
        return NO_COMMITMENT if error.startswith(NO_COMMITMENT) else f"no report: {error}"
    return "not in the report" if row.state == FAILED else row.state


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
    """The journal's final state of this run's transactions, whoever acted on them (this
    process, or an agent sharing the journal)."""

    journal: str
    transactions: list[TransactionResult]
    skipped: list[Skipped]
    notes: list[str] = field(default_factory=list)
    """Hints for the user (e.g. where a report that never came may have gone)."""
    error: str | None = None
    """Set when the run stopped on a usage or connection error (exit status 3)."""

    @property
    def exit_status(self) -> int:
        """3 the run stopped on an error; 1 something failed (wins over pending); 2 reports
        outstanding, or delete/move of committed files still due; 0 all committed (and
        deleted/moved if asked)."""
        if self.error is not None:
            return EXIT_ERROR
        states = {tx.state for tx in self.transactions}
        if states & {FAILED, ABORTED}:
            return EXIT_FAILED
        if PENDING in states or self.actions().get("due"):
            return EXIT_PENDING
        return EXIT_COMMITTED

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for tx in self.transactions:
            for f in tx.files:
                totals[f.state] = totals.get(f.state, 0) + 1
        return totals

    def actions(self) -> dict[str, int]:
        """Delete/move actions by state (``done``, ``due``, ``skipped``), from the journal."""
        totals: dict[str, int] = {}
        for tx in self.transactions:
            for f in tx.files:
                if f.action is not None:
                    totals[f.action] = totals.get(f.action, 0) + 1
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_status": self.exit_status,
            "error": self.error,
            "journal": self.journal,
            "files_by_state": self.counts(),
            "actions": self.actions(),
            "notes": self.notes,
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
            None if row.state == COMMITTED else failure_words(row, tx),
            row.action,
            row.action_note,
        )
        for row in journal.files(tx.id)
    ]
    return TransactionResult(tx.transaction_uid, tx.id, tx.state, files, tx.last_error)
