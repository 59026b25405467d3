"""The Storage Commitment SCP service: an archive that commits only what it durably holds.

It receives C-STORE into the :class:`~stgcmt.storage.instances.InstanceStore`
(:mod:`~stgcmt.scp.c_store`), journals each N-ACTION durably before answering it
(:mod:`~stgcmt.scp.n_action`), verifies the references, making committed instances durable
(:mod:`~stgcmt.scp.verification`), and delivers the N-EVENT-REPORT on the requesting association
or a new one, retrying with exponential backoff until delivered or given up
(:mod:`~stgcmt.scp.delivery`). Who may associate is :mod:`~stgcmt.scp.admission`. A restart
resumes every unfinished transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from stgcmt import ul
from stgcmt.config import ScpConfig
from stgcmt.dicom.part10 import MalformedDataset, index_attributes
from stgcmt.dicom.status import SUCCESS
from stgcmt.events import (
    ApplicationActivity,
    AssociationClosed,
    Events,
    InstanceStored,
    Peer,
    ReportGivenUp,
    SecurityAlert,
)
from stgcmt.scp.admission import Admission
from stgcmt.scp.c_store import CStore
from stgcmt.scp.delivery import Delivery
from stgcmt.scp.n_action import NAction
from stgcmt.scp.requesters import Requesters
from stgcmt.scp.verification import Verification
from stgcmt.storage.backends import open_scp_queries, open_scp_storage
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.interfaces import ScpJournal, ScpQueries
from stgcmt.storage.queries import STATE_WORDS
from stgcmt.storage.scp_journal import (
    ACTIVE_STATES,
    RECEIVED,
    REPORT_PENDING,
    VERIFYING,
    Transaction,
)

log = logging.getLogger("stgcmt.scp")


class _TimedSink:
    """A streamed C-STORE's sink that reports its answer and the bytes it received."""

    def __init__(
        self, sink: ul.StoreSink, answered: Callable[[int, int], None], received: int
    ) -> None:
        self._sink = sink
        self._answered = answered
        self._received = received

    def write(self, data: bytes | memoryview) -> None:
        self._received += len(data)
        self._sink.write(data)

    def finish(self) -> int:
        status = self._sink.finish()
        self._answered(status, self._received)
        return status

    def discard(self) -> None:  # never answered: no event
        self._sink.discard()


class StorageCommitmentSCP:
    """Run with :meth:`start` / :meth:`stop` (or as a context manager)."""

    def __init__(self, config: ScpConfig, events: Events | None = None) -> None:
        self.config = config.checked()
        self.events = events or Events()
        data_dir = config.data_dir
        storage = open_scp_storage(self.config.database, data_dir, self.config.port)
        self.store = InstanceStore(
            data_dir,
            supported_classes=ul.STORAGE_SOP_CLASSES,
            overwrite_duplicates=config.overwrite_duplicates,
            max_bytes=config.max_store_bytes,
            durability=config.durability,
            index=storage.index,
        )
        self.journal: ScpJournal = storage.journal
        self._wake = threading.Condition(threading.Lock())
        self._stopping = False
        self._requesters = Requesters(self._wake)
        self._c_store = CStore(self.store)
        self._verification = Verification(self.config, self.journal, self.store)
        self._delivery = Delivery(
            self.config, self.journal, self._requesters, self._wake, self.events
        )
        self._n_action = NAction(
            self.config,
            self.journal,
            self._requesters,
            self._delivery.journal_recovered,
            self.events,
        )
        self._admission = Admission(
            self.config, lambda: self._server.active_associations, self.events
        )
        self._worker = threading.Thread(target=self._run, name="stgcmt-commitment", daemon=True)
        self._server = ul.listen(
            config.aet,
            config.bind,
            config.port,
            ul.Handlers(
                accept=self._admission.accept,
                c_store=self._on_c_store,
                c_store_stream=self._on_c_store_stream,
                n_action=self._n_action.on_n_action,
                n_action_answered=self._requesters.answered,
                closed=self._on_closed,
                tls_failed=lambda host, port, why: self.events.emit(
                    SecurityAlert("tls-handshake", why, Peer("", config.aet, host, port))
                ),
            ),
            storage=True,
            commitment=True,
            timeouts=config.timeouts,
            max_pdu=config.max_pdu,
            # The engine's own limit stays above ours so that ours, which logs, decides.
            max_associations=config.max_associations + 1,
            max_pending_associations=config.max_pending_associations,
            max_dataset_bytes=config.max_dataset_bytes,
            tls=config.tls,
            reuse_port=config.reuse_port,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> StorageCommitmentSCP:
        dropped = self.store.recover()
        if dropped:
            log.warning("%d instances were lost in a crash before being committed", dropped)
        self.store.start_durability_rounds(self.config.verify)
        self._log_resuming()
        self._server.start()
        self._worker.start()
        self.events.emit(ApplicationActivity("start", "scp", self.config.aet))
        log.info(
            "SCP %s listening on %s:%d (data %s, verify=%s, reports on %s association,"
            " %d known peers%s)",
            self.config.aet,
            self.config.bind,
            self.port,
            self.config.data_dir,
            self.config.verify,
            self.config.report_assoc,
            len(self.config.remotes),
            ", unknown AEs accepted" if self.config.accept_unknown else "",
        )
        return self

    def _log_resuming(self) -> None:
        """One line for what is unfinished (in a cluster: every node's transactions, which
        this node may take over once their leases expire), one per transaction at DEBUG."""
        counts = self.journal.active_counts()
        total = sum(n for n, _ in counts.values())
        if total:
            log.info(
                "%d unfinished transactions resume (%s; %d of them received by this node)",
                total,
                ", ".join(f"{counts[s][0]} {STATE_WORDS[s]}" for s in ACTIVE_STATES if s in counts),
                sum(mine for _, mine in counts.values()),
            )
        if log.isEnabledFor(logging.DEBUG):
            for tx in self.journal.in_state(*ACTIVE_STATES):
                log.debug("%s from %s resumes in state %s", tx.label, tx.calling_aet, tx.state)

    @property
    def port(self) -> int:
        return self._server.port

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._server.stop()
        if self._worker.is_alive():
            self._worker.join(timeout=30)
        self._delivery.stop()
        self.journal.close()
        self.store.close()
        self.events.emit(ApplicationActivity("stop", "scp", self.config.aet))
        log.info("SCP %s stopped", self.config.aet)

    def __enter__(self) -> StorageCommitmentSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _on_c_store(self, request: ul.StoreRequest) -> int:
        """The C-STORE handler, timed: its answer is an :class:`InstanceStored` event."""
        started = time.perf_counter()
        status = self._c_store.on_c_store(request)
        self._stored(request, status, len(request.dataset), started)
        return status

    def _on_c_store_stream(self, request: ul.StoreRequest) -> ul.StoreSink | int:
        """The streamed C-STORE handler: decided on the first bytes (an event now), or its
        sink, whose answer at the end is the event."""
        started = time.perf_counter()
        begun = self._c_store.on_c_store_stream(request)
        if isinstance(begun, int):
            self._stored(request, begun, len(request.dataset), started)
            return begun
        return _TimedSink(
            begun,
            lambda status, size: self._stored(request, status, size, started),
            len(request.dataset),
        )

    def _stored(self, request: ul.StoreRequest, status: int, size: int, started: float) -> None:
        seconds = time.perf_counter() - started
        study = patient = None
        if status == SUCCESS:  # for the audit trail; the store passed the same scan already
            # (a duplicate may be decided before the data set is read)
            with contextlib.suppress(MalformedDataset):
                study, _, patient = index_attributes(request.dataset, request.transfer_syntax)
        self.events.emit(
            InstanceStored(
                Peer.of(request.peer),
                status,
                request.sop_class_uid,
                request.sop_instance_uid,
                size,
                seconds,
                study_instance_uid=study,
                patient_id=patient,
            )
        )

    def _on_closed(self, link: ul.Link) -> None:
        self._requesters.closed(link)
        stored = self._c_store.closed(link)
        self.events.emit(AssociationClosed(Peer.of(link.peer), stored))

    # -- the worker: verify, then deliver --------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                delay = self._work_once()
            except Exception:
                log.exception("commitment worker error; retrying in 5 s")
                delay = 5.0
            with self._wake:
                if self._stopping:
                    return
                self._wake.wait(timeout=delay)

    def _work_once(self) -> float:
        """One pass; returns how long to sleep before the next pass is due."""
        unanswered = self._requesters.unanswered()
        reassociated = self._requesters.take_reassociated()
        for tx in self.journal.in_state(RECEIVED, VERIFYING):
            if tx.id not in unanswered:
                self._verification.verify(tx)
        next_due = self._delivery.deliver_due(unanswered, reassociated)
        return max(0.05, next_due - time.time())

    # -- actions an administrator asks for (HTTP API) ------------------------------------------

    @property
    def queries(self) -> ScpQueries:
        """Read-only views of this archive's data, safe from any thread."""
        return open_scp_queries(self.config.database.url, self.config.data_dir)

    def retry_report(self, tx_id: int) -> Transaction:
        """Deliver a pending report now instead of at its scheduled attempt. Raises
        LookupError for an unknown transaction, ValueError when it has no report pending."""
        tx = self._pending_report(tx_id, "retry")
        self._delivery.retry_now(tx)
        self.wake()
        log.info("%s: report retry requested by an administrator", tx.label)
        return self.journal.get(tx_id)

    def give_up_report(self, tx_id: int) -> Transaction:
        """Stop delivering a pending report (the requester will never get it)."""
        tx = self._pending_report(tx_id, "give up")
        error = f"given up by an administrator after {tx.attempts} attempts"
        self.journal.mark_given_up(tx.id, error)
        self.events.emit(ReportGivenUp(tx.calling_aet, tx.transaction_uid, error))
        log.warning("%s for %s: %s", tx.label, tx.calling_aet, error)
        return self.journal.get(tx_id)

    def reverify(self, tx_id: int) -> Transaction:
        """Verify a pending report's references again (e.g. instances arrived since), so the
        report sent says what the archive holds now."""
        tx = self._pending_report(tx_id, "re-verify")
        self.journal.set_state(tx.id, VERIFYING)
        self.wake()
        log.info("%s: re-verification requested by an administrator", tx.label)
        return self.journal.get(tx_id)

    def _pending_report(self, tx_id: int, what: str) -> Transaction:
        try:
            tx = self.journal.get(tx_id)
        except IndexError:
            raise LookupError(f"no transaction #{tx_id}") from None
        if tx.state != REPORT_PENDING:
            raise ValueError(f"cannot {what} {tx.label}: it is {tx.state}, not report_pending")
        if self._delivery.in_flight(tx.id):
            raise ValueError(f"cannot {what} {tx.label}: a delivery attempt is under way")
        return tx

    # -- for tests and tools ------------------------------------------------------------------

    def wait_delivered(self, transaction_uid: str, timeout: float) -> Transaction | None:
        """Block until a transaction with this UID is delivered (or given up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tx = self.journal.latest_finished(transaction_uid)
            if tx is not None:
                return tx
            time.sleep(0.05)
        return None
