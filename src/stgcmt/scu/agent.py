"""The SCU-side agent: a long-running listener for late Storage Commitment reports.

Archives may answer hours or days after ``stgcmt send`` has given up waiting. The agent listens
as the sender's AE title, matches every report against the shared journal, and performs the
delete/move requested at send time. All of its memory is the journal, so a restart loses
nothing: on start it finishes the file actions a crash left due and waits for every pending
transaction. Only the archive a transaction was sent to (or a named ``--reporter``) may report
for it (see :class:`~stgcmt.scu.reports.TrustPolicy`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from stgcmt.config import Timeouts, TlsConfig
from stgcmt.scu.files import finish_due_actions
from stgcmt.scu.reports import (
    DEFAULT_AET,
    DEFAULT_LISTEN_BIND,
    Reporter,
    ReportHandler,
    report_server,
)
from stgcmt.storage.scu_journal import PENDING, ScuJournal

log = logging.getLogger("stgcmt.agent")

DEFAULT_PORT = 11113


class Agent:
    """Run with :meth:`start` / :meth:`stop` (or as a context manager)."""

    def __init__(
        self,
        journal_path: Path,
        aet: str = DEFAULT_AET,
        bind: str = DEFAULT_LISTEN_BIND,
        port: int = DEFAULT_PORT,
        timeouts: Timeouts | None = None,
        tls: TlsConfig | None = None,
        reporters: Sequence[Reporter] = (),
        max_pdu: int | None = None,
    ) -> None:
        self.aet = aet
        self.bind = bind
        self.journal = ScuJournal(journal_path)
        self.handler = ReportHandler(self.journal, aet, reporters)
        self._server = report_server(self.handler, bind, port, timeouts, tls, max_pdu)

    def start(self) -> Agent:
        finish_due_actions(self.journal)
        pending = self.journal.in_state(PENDING)
        self._server.start()
        reporters = ", ".join(map(str, self.handler.trust.reporters)) or "none"
        log.info(
            "agent %s listening on %s:%d for reports (%d transactions pending, journal %s;"
            " reports only from the archive asked, other reporters: %s)",
            self.aet,
            self.bind,
            self.port,
            len(pending),
            self.journal.path,
            reporters,
        )
        return self

    @property
    def port(self) -> int:
        return self._server.port

    def stop(self) -> None:
        self._server.stop()
        self.journal.close()
        log.info("agent %s stopped", self.aet)

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
