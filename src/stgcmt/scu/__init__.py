"""The Storage Commitment SCU: send files, request commitment, act only on reports from the
archive that was asked.

What the CLI and Python callers use is here: :func:`send` and its options and results, the
:class:`Agent`, the journal, and :func:`status` (a read-only look at a journal)."""

from stgcmt.scu.agent import DEFAULT_PORT, Agent
from stgcmt.scu.reports import DEFAULT_AET, DEFAULT_LISTEN_BIND, Reporter
from stgcmt.scu.results import (
    EXIT_COMMITTED,
    EXIT_FAILED,
    EXIT_PENDING,
    FileResult,
    SendResult,
    TransactionResult,
)
from stgcmt.scu.send import (
    REPORT_WAIT_CHOICES,
    ProgressCallback,
    ReportWait,
    SendOptions,
    UsageError,
    send,
)
from stgcmt.storage.queries import format_scu_status as format_status
from stgcmt.storage.queries import scu_status as status
from stgcmt.storage.scu_journal import COMMITTED, ScuJournal, default_journal_path
from stgcmt.storage.sqlite import StorageUnavailable
from stgcmt.ul import AssociationError

__all__ = [
    "COMMITTED",
    "DEFAULT_AET",
    "DEFAULT_LISTEN_BIND",
    "DEFAULT_PORT",
    "EXIT_COMMITTED",
    "EXIT_FAILED",
    "EXIT_PENDING",
    "REPORT_WAIT_CHOICES",
    "Agent",
    "AssociationError",
    "FileResult",
    "ProgressCallback",
    "ReportWait",
    "Reporter",
    "ScuJournal",
    "SendOptions",
    "SendResult",
    "StorageUnavailable",
    "TransactionResult",
    "UsageError",
    "default_journal_path",
    "format_status",
    "send",
    "status",
]
