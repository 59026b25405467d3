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
from typing import cast

from stgcmt import ul
from stgcmt.config import RemoteAE, Timeouts, TlsConfig
from stgcmt.dicom.commitment import CommitmentRequest, Reference
from stgcmt.dicom.status import describe_status
from stgcmt.events import ApplicationActivity, Events
from stgcmt.scu.files import finish_due_actions
from stgcmt.scu.options import DEFAULT_AET, DEFAULT_LISTEN_BIND, Reporter, SendOptions
from stgcmt.scu.reports import ReportHandler, report_server
from stgcmt.scu.results import SendResult
from stgcmt.scu.send import send
from stgcmt.storage.interfaces import ScuQueries
from stgcmt.storage.queries import SqliteScuQueries
from stgcmt.storage.scu_journal import (
    FAILED,
    PENDING,
    STORE_FAILED,
    OnCommit,
    ScuJournal,
    Transaction,
)

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
        events: Events | None = None,
    ) -> None:
        self.aet = aet
        self.bind = bind
        self.events = events or Events()
        self.timeouts = timeouts or Timeouts()
        self.tls = tls or TlsConfig()
        self.max_pdu = max_pdu
        self.journal = ScuJournal(journal_path)
        self.handler = ReportHandler(self.journal, aet, reporters, self.events)
        self._server = report_server(self.handler, bind, port, timeouts, tls, max_pdu)

    def start(self) -> Agent:
        finish_due_actions(self.journal)
        pending = self.journal.in_state(PENDING)
        self._server.start()
        self.events.emit(ApplicationActivity("start", "agent", self.aet))
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
        self.events.emit(ApplicationActivity("stop", "agent", self.aet))
        log.info("agent %s stopped", self.aet)

    # -- actions an administrator asks for (HTTP API) ------------------------------------------

    @property
    def queries(self) -> ScuQueries:
        """Read-only views of the journal, safe from any thread."""
        return SqliteScuQueries(self.journal.path)

    def request_commitment(self, tx_id: int) -> int | None:
        """Send the N-ACTION of a pending transaction again, on a new association to the
        archive it was sent to: for a request that never reached the archive (no response),
        which otherwise stays pending forever. Returns the N-ACTION status (None: no answer).
        The report comes to our listener as usual. Raises LookupError for an unknown
        transaction, ValueError when it is not pending, AssociationError/OSError when the
        archive cannot be reached."""
        tx = self._transaction(tx_id, PENDING, "request commitment for")
        references = [
            Reference(f.sop_class_uid, f.sop_instance_uid)
            for f in self.journal.files(tx.id, PENDING)
        ]
        plan = ul.ContextPlan(commitment="scu")
        with ul.open_association(
            self.aet, self._archive(tx), plan, timeouts=self.timeouts, tls=self.tls
        ) as association:
            status = association.n_action(CommitmentRequest(tx.transaction_uid, references))
        outcome = "no answer" if status is None else describe_status(status)
        self.journal.set_error(tx.id, f"N-ACTION sent again by an administrator: {outcome}")
        log.info("%s: commitment requested again from %s: %s", tx.label, tx.archive, outcome)
        return status

    def resend_failed(self, tx_id: int) -> SendResult:
        """Send the files of a finished transaction that were not committed (or not stored)
        again, as a new transaction to the same archive with the same on-commit action."""
        tx = self._transaction(tx_id, FAILED, "re-send the failed files of")
        paths = [Path(f.path) for f in self.journal.files(tx.id, FAILED, STORE_FAILED)]
        if not paths:
            raise ValueError(f"{tx.label} has no failed files to send again")
        options = SendOptions(
            aet=self.aet,
            report_assoc="same",
            timeout=self.timeouts.dimse,
            on_commit=cast(OnCommit, tx.on_commit),
            move_dir=Path(tx.move_dir) if tx.move_dir else None,
            timeouts=self.timeouts,
            tls=self.tls,
        )
        log.info("%s: %d failed files sent again to %s", tx.label, len(paths), tx.archive)
        return send(self._archive(tx), paths, self.journal, options)

    def _transaction(self, tx_id: int, state: str, what: str) -> Transaction:
        try:
            tx = self.journal.get(tx_id)
        except IndexError:
            raise LookupError(f"no transaction #{tx_id}") from None
        if tx.state != state:
            raise ValueError(f"cannot {what} {tx.label}: it is {tx.state}, not {state}")
        if tx.archive_aet is None or tx.archive_host is None or tx.archive_port is None:
            raise ValueError(f"{tx.label}: the journal does not say which archive it went to")
        return tx

    @staticmethod
    def _archive(tx: Transaction) -> RemoteAE:
        assert tx.archive_aet and tx.archive_host and tx.archive_port  # by _transaction
        return RemoteAE(tx.archive_aet, tx.archive_host, tx.archive_port)

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
