"""The Storage Commitment SCU: send files, request commitment, act only on reports from the
archive that was asked.

What the CLI and Python callers use is here: :func:`send` and its options and results, the
:class:`Agent`, the journal, and :func:`status` (a read-only look at a journal).

The names are loaded on first use (PEP 562 ``__getattr__``): ``stgcmt status`` or
``stgcmt send --help`` need a constant or the journal, not the engine and pydicom behind
:func:`send`, and importing those is most of such a run's time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stgcmt.lazy import lazy_attributes

if TYPE_CHECKING:
    from stgcmt.scu.agent import DEFAULT_PORT, Agent
    from stgcmt.scu.options import (
        DEFAULT_AET,
        DEFAULT_LISTEN_BIND,
        REPORT_WAIT_CHOICES,
        Reporter,
        ReportWait,
        SendOptions,
        UsageError,
    )
    from stgcmt.scu.results import (
        EXIT_COMMITTED,
        EXIT_FAILED,
        EXIT_PENDING,
        FileResult,
        SendResult,
        TransactionResult,
    )
    from stgcmt.scu.send import ProgressCallback, send
    from stgcmt.storage.queries import format_scu_status as format_status
    from stgcmt.storage.queries import scu_status as status
    from stgcmt.storage.scu_journal import COMMITTED, ScuJournal, default_journal_path
    from stgcmt.storage.sqlite import StorageUnavailable
    from stgcmt.ul import AssociationError

_WHERE = {
    "DEFAULT_PORT": ("stgcmt.scu.agent", "DEFAULT_PORT"),
    "Agent": ("stgcmt.scu.agent", "Agent"),
    "DEFAULT_AET": ("stgcmt.scu.options", "DEFAULT_AET"),
    "DEFAULT_LISTEN_BIND": ("stgcmt.scu.options", "DEFAULT_LISTEN_BIND"),
    "Reporter": ("stgcmt.scu.options", "Reporter"),
    "EXIT_COMMITTED": ("stgcmt.scu.results", "EXIT_COMMITTED"),
    "EXIT_FAILED": ("stgcmt.scu.results", "EXIT_FAILED"),
    "EXIT_PENDING": ("stgcmt.scu.results", "EXIT_PENDING"),
    "FileResult": ("stgcmt.scu.results", "FileResult"),
    "SendResult": ("stgcmt.scu.results", "SendResult"),
    "TransactionResult": ("stgcmt.scu.results", "TransactionResult"),
    "REPORT_WAIT_CHOICES": ("stgcmt.scu.options", "REPORT_WAIT_CHOICES"),
    "ProgressCallback": ("stgcmt.scu.send", "ProgressCallback"),
    "ReportWait": ("stgcmt.scu.options", "ReportWait"),
    "SendOptions": ("stgcmt.scu.options", "SendOptions"),
    "UsageError": ("stgcmt.scu.options", "UsageError"),
    "send": ("stgcmt.scu.send", "send"),
    "format_status": ("stgcmt.storage.queries", "format_scu_status"),
    "status": ("stgcmt.storage.queries", "scu_status"),
    "COMMITTED": ("stgcmt.storage.scu_journal", "COMMITTED"),
    "ScuJournal": ("stgcmt.storage.scu_journal", "ScuJournal"),
    "default_journal_path": ("stgcmt.storage.scu_journal", "default_journal_path"),
    "StorageUnavailable": ("stgcmt.storage.sqlite", "StorageUnavailable"),
    "AssociationError": ("stgcmt.ul", "AssociationError"),
}
"""Each public name: the module that defines it, and its name there."""

__all__ = [
    "Agent",
    "AssociationError",
    "COMMITTED",
    "DEFAULT_AET",
    "DEFAULT_LISTEN_BIND",
    "DEFAULT_PORT",
    "EXIT_COMMITTED",
    "EXIT_FAILED",
    "EXIT_PENDING",
    "FileResult",
    "ProgressCallback",
    "REPORT_WAIT_CHOICES",
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


__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
