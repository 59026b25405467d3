"""The Storage Commitment SCP service: an archive that commits only what it durably holds.

It receives C-STORE into the :class:`~stgcmt.storage.instances.InstanceStore`, journals each
N-ACTION durably before answering it, verifies the references (making committed instances
durable), and delivers the N-EVENT-REPORT on the requesting association or a new one, retrying with
exponential backoff until delivered or given up. A restart resumes every unfinished transaction.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stgcmt import ul as net
from stgcmt.config import RemoteAE, ScpConfig
from stgcmt.dicom.commitment import (
    ACTION_TYPE_REQUEST_COMMITMENT,
    CommitmentReport,
    CommitmentRequest,
    InvalidRequest,
)
from stgcmt.dicom.status import (
    CANNOT_UNDERSTAND,
    DUPLICATE_TRANSACTION_UID,
    INVALID_OBJECT_INSTANCE,
    NO_SUCH_ACTION_TYPE,
    NO_SUCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    describe_status,
)
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH_MODEL
from stgcmt.faults import crash_point
from stgcmt.storage.instances import InstanceStore, StoreRefused, is_out_of_space, shown
from stgcmt.storage.scp_journal import (
    DELIVERED,
    RECEIVED,
    REPORT_PENDING,
    VERIFYING,
    CommitmentJournal,
    Transaction,
)

log = logging.getLogger("stgcmt.scp")

DELIVERY_THREADS = 4
JOURNAL_ERRORS = (sqlite3.Error, OSError)
"""What a journal write raises when its storage fails (disk full, read-only, I/O error)."""


@dataclass
class _Hold:
    """A transaction whose delivery bookkeeping the journal could not record: delivery waits
    in memory (the journal's own schedule cannot be updated) so a full or read-only disk
    cannot turn into a report storm."""

    until: float
    unrecorded: int = 0
    """Attempts (or recordings) since the journal last recorded one: they extend the retry
    schedule as recorded attempts would."""
    delivered_via: str | None = None
    """Set when the report was delivered and only recording that failed: it is never sent
    again for this, only the recording is retried."""


def _addresses(host: str) -> frozenset[str]:
    """The IP addresses a configured host name stands for (resolved once, at start)."""
    try:
        return frozenset(info[4][0] for info in socket.getaddrinfo(host, None))
    except OSError:
        log.warning("cannot resolve %s: associations from it will be rejected", host)
        return frozenset({host})


class StorageCommitmentSCP:
    """Run with :meth:`start` / :meth:`stop` (or as a context manager)."""

    def __init__(self, config: ScpConfig) -> None:
        self.config = config.checked()
        data_dir = config.data_dir
        self.store = InstanceStore(
            data_dir,
            supported_classes=net.STORAGE_SOP_CLASSES,
            overwrite_duplicates=config.overwrite_duplicates,
            max_bytes=config.max_store_bytes,
        )
        self.journal = CommitmentJournal(data_dir / "commitment.sqlite")
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        # In memory only: associations die with the process.
        self._awaiting_answer: dict[int, list[int]] = defaultdict(list)
        self._requesting_link: dict[int, net.Link] = {}
        self._links_by_aet: dict[str, list[net.Link]] = defaultdict(list)
        self._in_flight: set[int] = set()
        self._reassociated: set[str] = set()  # AEs with a fresh association to report on
        self._stored: dict[int, Counter[str]] = defaultdict(Counter)
        self._holds: dict[int, _Hold] = {}
        self._journal_error: str | None = None  # set while the journal cannot record
        self._delivery = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="stgcmt-report")
        self._worker = threading.Thread(target=self._run, name="stgcmt-commitment", daemon=True)
        self._server = net.Server(
            config.aet,
            config.bind,
            config.port,
            net.Handlers(
                accept=self._accept,
                c_store=self._on_c_store,
                n_action=self._on_n_action,
                n_action_answered=self._on_n_action_answered,
                closed=self._on_closed,
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
        )
        self._remote_addresses = {r.aet: _addresses(r.host) for r in config.remotes}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> StorageCommitmentSCP:
        dropped = self.store.recover()
        if dropped:
            log.warning("%d instances were lost in a crash before being committed", dropped)
        for tx in self.journal.in_state(RECEIVED, VERIFYING, REPORT_PENDING):
            log.info("%s from %s resumes in state %s", tx.label, tx.calling_aet, tx.state)
        self._server.start()
        self._worker.start()
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
        self._delivery.shutdown(wait=True)
        self.journal.close()
        self.store.close()
        log.info("SCP %s stopped", self.config.aet)

    def __enter__(self) -> StorageCommitmentSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- association level ---------------------------------------------------------------------

    def _accept(self, peer: net.PeerInfo) -> net.Rejection | None:
        if peer.called_aet != self.config.aet:
            log.warning(
                "rejected association from %s: called AE %r is not ours (%r)",
                peer,
                peer.called_aet,
                self.config.aet,
            )
            return net.Rejection("called-aet")
        if self._server.active_associations > self.config.max_associations:
            log.warning(
                "rejected association from %s: %d associations already open (limit %d)",
                peer,
                self._server.active_associations - 1,
                self.config.max_associations,
            )
            return net.Rejection("congestion")
        known = self.config.remote(peer.calling_aet)
        if known is not None and self.config.check_host:
            addresses = self._remote_addresses[known.aet]
            if peer.host not in addresses:
                log.warning(
                    "rejected association from %s: AE %r is configured at %s, not %s"
                    " (set check_host = false to allow any host)",
                    peer,
                    peer.calling_aet,
                    known.host,
                    peer.host,
                )
                return net.Rejection("calling-aet")
        if known is None and not self.config.accept_unknown:
            log.warning(
                "rejected association from %s: calling AE %r is not a known peer"
                " (add --remote %s@HOST:PORT, or --accept-unknown)",
                peer,
                peer.calling_aet,
                peer.calling_aet,
            )
            return net.Rejection("calling-aet")
        return None

    def _on_closed(self, link: net.Link) -> None:
        with self._lock:
            self._awaiting_answer.pop(link.peer.association_id, None)
            links = self._links_by_aet.get(link.peer.calling_aet, [])
            if link in links:
                links.remove(link)
            stored = self._stored.pop(link.peer.association_id, None)
        if stored:
            log.info(
                "association from %s closed: %s",
                link.peer,
                ", ".join(f"{n} {what}" for what, n in sorted(stored.items())),
            )

    # -- C-STORE -------------------------------------------------------------------------------

    def _on_c_store(self, request: net.StoreRequest) -> int:
        """Every outcome, even an unexpected exception, is a C-STORE status and a log line:
        nothing a peer sends may escape into the engine."""
        try:
            return self._store(request)
        except Exception:
            log.exception(
                "C-STORE %s from %s failed (%s)",
                shown(request.sop_instance_uid),
                request.peer,
                describe_status(PROCESSING_FAILURE),
            )
            return PROCESSING_FAILURE

    def _store(self, request: net.StoreRequest) -> int:
        try:
            outcome = self.store.store(
                request.sop_class_uid,
                request.sop_instance_uid,
                request.transfer_syntax,
                request.dataset,
                request.peer.calling_aet,
                abstract_syntax=request.abstract_syntax,
            )
        except StoreRefused as exc:
            log.error(
                "C-STORE %s from %s refused with %s: %s",
                shown(request.sop_instance_uid),
                request.peer,
                describe_status(exc.status),
                exc,
            )
            return exc.status
        except ValueError as exc:
            log.error("C-STORE %s from %s refused: %s", request.sop_instance_uid, request.peer, exc)
            return CANNOT_UNDERSTAND
        except OSError as exc:
            status = OUT_OF_RESOURCES if is_out_of_space(exc) else PROCESSING_FAILURE
            log.error(
                "C-STORE %s from %s failed (%s): %s",
                request.sop_instance_uid,
                request.peer,
                describe_status(status),
                exc,
            )
            return status
        if outcome.action == "conflict":
            log.warning(
                "C-STORE %s from %s: instance already held under another SOP Class;"
                " kept the first, a commitment for class %s will fail with %s",
                request.sop_instance_uid,
                request.peer,
                request.sop_class_uid,
                describe_status(0x0119),
            )
        with self._lock:
            self._stored[request.peer.association_id][outcome.action] += 1
        log.debug("C-STORE %s from %s: %s", request.sop_instance_uid, request.peer, outcome.action)
        return SUCCESS

    # -- N-ACTION ------------------------------------------------------------------------------

    def _on_n_action(self, link: net.Link, request: net.ActionRequest) -> tuple[int, None]:
        """Every outcome, even an unexpected exception, is an N-ACTION status and a log line."""
        try:
            return self._n_action(link, request)
        except Exception:
            log.exception(
                "N-ACTION from %s failed (%s)", link.peer, describe_status(PROCESSING_FAILURE)
            )
            return PROCESSING_FAILURE, None

    def _n_action(self, link: net.Link, request: net.ActionRequest) -> tuple[int, None]:
        peer = link.peer
        try:
            commitment = self._validate(request)
        except InvalidRequest as exc:
            log.error(
                "N-ACTION from %s refused with %s: %s", peer, describe_status(exc.status), exc
            )
            return exc.status, None
        mode = self.config.report_assoc if self.config.remote(peer.calling_aet) else "same"
        try:
            tx = self.journal.record_request(
                commitment.transaction_uid,
                peer.calling_aet,
                peer.host,
                mode,
                commitment.references,
            )
        except Exception as exc:  # the journal is the promise: if it fails, do not promise
            log.exception("N-ACTION from %s: cannot journal the request: %s", peer, exc)
            return PROCESSING_FAILURE, None
        self._journal_recovered()
        crash_point("scp.n_action.after_journal")
        with self._lock:
            self._awaiting_answer[peer.association_id].append(tx.id)
        duplicate = (
            f"; duplicate of active #{tx.duplicate_of}, every reference will fail with "
            f"{describe_status(DUPLICATE_TRANSACTION_UID)}"
            if tx.duplicate_of
            else ""
        )
        log.info(
            "N-ACTION from %s: %s with %d references journaled, report via %s association%s",
            peer,
            tx.label,
            tx.n_refs,
            mode,
            duplicate,
        )
        return SUCCESS, None

    def _validate(self, request: net.ActionRequest) -> CommitmentRequest:
        """The status to refuse with (as InvalidRequest) comes before anything is journaled."""
        if request.requested_sop_class_uid != STORAGE_COMMITMENT_PUSH_MODEL:
            raise InvalidRequest(
                NO_SUCH_SOP_CLASS,
                f"Requested SOP Class UID {shown(request.requested_sop_class_uid)} is not"
                f" Storage Commitment Push Model ({STORAGE_COMMITMENT_PUSH_MODEL})",
            )
        if request.requested_sop_instance_uid != STORAGE_COMMITMENT_INSTANCE:
            raise InvalidRequest(
                INVALID_OBJECT_INSTANCE,
                f"Requested SOP Instance UID {request.requested_sop_instance_uid!r} is not the"
                f" well-known {STORAGE_COMMITMENT_INSTANCE}",
            )
        if request.action_type_id != ACTION_TYPE_REQUEST_COMMITMENT:
            raise InvalidRequest(
                NO_SUCH_ACTION_TYPE,
                f"Action Type ID {request.action_type_id} (only 1, request commitment, exists)",
            )
        return request.commitment(self.config.max_references)

    def _on_n_action_answered(self, link: net.Link) -> None:
        """The N-ACTION response is on its way: only now may a report follow on this
        association, or the requester could see the report before the response."""
        with self._wake:
            tx_ids = self._awaiting_answer.pop(link.peer.association_id, [])
            for tx_id in tx_ids:
                self._requesting_link[tx_id] = link
            links = self._links_by_aet[link.peer.calling_aet]
            if link not in links:
                links.append(link)
            self._reassociated.add(link.peer.calling_aet)
            self._wake.notify_all()

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
        with self._lock:
            unanswered = {tx for txs in self._awaiting_answer.values() for tx in txs}
            reassociated, self._reassociated = self._reassociated, set()
        for tx in self.journal.in_state(RECEIVED, VERIFYING):
            if tx.id not in unanswered:
                self._verify(tx)
        now = time.time()
        next_due = now + 60.0
        for tx in self.journal.in_state(REPORT_PENDING):
            if tx.id in unanswered:
                continue
            with self._lock:
                hold = self._holds.get(tx.id)
            if hold is not None and hold.until > now:
                next_due = min(next_due, hold.until)
                continue
            if hold is not None and hold.delivered_via is not None:
                if not self._record_delivery(tx, hold.delivered_via):
                    next_due = min(next_due, hold.until)  # the hold was extended in place
                continue
            due = tx.next_attempt_at or now
            if due <= now or tx.calling_aet in reassociated:
                self._submit_delivery(tx)
            else:
                next_due = min(next_due, due)
        return max(0.05, next_due - time.time())

    def _verify(self, tx: Transaction) -> None:
        self.journal.set_state(tx.id, VERIFYING)
        log.info("%s: verifying %d references (policy %s)", tx.label, tx.n_refs, self.config.verify)
        for batch in self.journal.reference_batches(tx.id):
            if tx.duplicate_of:
                reasons = [DUPLICATE_TRANSACTION_UID] * len(batch)
            else:
                reasons = self.store.verify([ref for _, ref in batch], self.config.verify)
            self.journal.record_results(
                tx.id, [(seq, reason) for (seq, _), reason in zip(batch, reasons, strict=True)]
            )
            crash_point("scp.verify.mid")
        tx = self.journal.finish_verification(tx.id, first_attempt_at=time.time())
        log.info(
            "%s: %d committed, %d failed; report pending for %s",
            tx.label,
            tx.n_committed,
            tx.n_failed,
            tx.calling_aet,
        )

    def _submit_delivery(self, tx: Transaction) -> None:
        with self._lock:
            if tx.id in self._in_flight or self._stopping:
                return
            self._in_flight.add(tx.id)
        self._delivery.submit(self._deliver_safely, tx)

    def _deliver_safely(self, tx: Transaction) -> None:
        try:
            self._deliver(tx)
        except JOURNAL_ERRORS as exc:
            self._hold(tx, exc)
        except Exception as exc:
            log.exception("%s: delivery error", tx.label)
            self._failed_attempt(tx, f"internal error: {exc}")
        finally:
            with self._wake:
                self._in_flight.discard(tx.id)
                self._wake.notify_all()

    def _deliver(self, tx: Transaction) -> None:
        if self._give_up_if_too_old(tx):
            return
        report = self.journal.report(tx, self.config.aet)
        try:
            outcome = self._send_report(tx, report)
        except (net.AssociationError, OSError) as exc:
            self._failed_attempt(tx, str(exc))
            return
        if outcome is None:
            reason = f"waiting for {tx.calling_aet} to associate again (no address to report to)"
            if tx.last_error != reason:
                log.info("%s: %s", tx.label, reason)
            until = time.time() + self.config.retry.cap
            self._record(tx, lambda: self.journal.postpone(tx.id, reason, until))
            return
        status, via = outcome
        if not net.is_success(status):
            self._failed_attempt(tx, f"N-EVENT-REPORT on {via}: {describe_status(status)}")
            return
        crash_point("scp.deliver.after_answer")
        if not self._record_delivery(tx, via):
            return
        log.info(
            "%s: report (event type %d: %d committed, %d failed) delivered to %s on %s",
            tx.label,
            report.event_type_id,
            len(report.committed),
            len(report.failed),
            tx.calling_aet,
            via,
        )

    def _give_up_if_too_old(self, tx: Transaction) -> bool:
        age = time.time() - tx.received_at
        if age <= self.config.retry.give_up_after:
            return False
        error = (
            f"gave up after {age:.0f} s and {tx.attempts} attempts"
            f" (last error: {tx.last_error or 'none'})"
        )
        if self._record(tx, lambda: self.journal.mark_given_up(tx.id, error)):
            log.error("%s for %s: %s", tx.label, tx.calling_aet, error)
        return True

    def _send_report(
        self, tx: Transaction, report: CommitmentReport
    ) -> tuple[int | None, str] | None:
        """Send on the association the mode allows; (status, where) or None when there is no
        way to reach the requester now. Raises AssociationError if a new one fails."""
        remote = self.config.remote(tx.calling_aet)
        link = self._link_for(tx)
        if link is not None:
            status = link.n_event_report(report.event_type_id, report)
            if status is not None or tx.report_assoc != "auto" or remote is None:
                return status, f"the association {link.peer} opened"
            log.info("%s: requesting association closed under the report", tx.label)
        if tx.report_assoc == "same" or remote is None:
            return None
        status = self._report_on_new_association(remote, report)
        return status, f"a new association to {remote}"

    def _link_for(self, tx: Transaction) -> net.Link | None:
        """The association to report on, if the mode allows one: the requesting association
        while open ('same', 'auto'), else for 'same' any open association of that AE on which
        an N-ACTION was just answered."""
        if tx.report_assoc == "new":
            return None
        with self._lock:
            link = self._requesting_link.get(tx.id)
            if link is not None and link.is_open:
                return link
            self._requesting_link.pop(tx.id, None)
            if tx.report_assoc == "same" or self.config.remote(tx.calling_aet) is None:
                for other in self._links_by_aet.get(tx.calling_aet, []):
                    if other.is_open:
                        return other
        return None

    def _report_on_new_association(self, remote: RemoteAE, report: CommitmentReport) -> int | None:
        """Open an association asking for the SCP role (IHE RAD-10) and send the report."""
        with net.open_association(
            self.config.aet,
            remote,
            net.ContextPlan(commitment="scp"),
            timeouts=self.config.timeouts,
            max_pdu=self.config.max_pdu,
            tls=self.config.tls,
        ) as association:
            return association.n_event_report(report.event_type_id, report)

    def _failed_attempt(self, tx: Transaction, error: str) -> None:
        with self._lock:
            hold = self._holds.get(tx.id)
        attempts = tx.attempts + 1 + (hold.unrecorded if hold else 0)
        delay = self.config.retry.delay(attempts)
        next_at = time.time() + delay
        if not self._record(tx, lambda: self.journal.record_failed_attempt(tx.id, error, next_at)):
            return
        log.warning(
            "%s: delivery attempt %d failed: %s; next attempt in %.1f s",
            tx.label,
            attempts,
            error,
            delay,
        )

    # -- when the journal cannot record ---------------------------------------------------------

    def _record_delivery(self, tx: Transaction, via: str) -> bool:
        """Record a delivered report; if the journal cannot, remember it in memory and retry
        only the recording (on the retry schedule), never the delivery."""
        return self._record(tx, lambda: self.journal.mark_delivered(tx.id, via), delivered_via=via)

    def _record(
        self, tx: Transaction, write: Callable[[], None], *, delivered_via: str | None = None
    ) -> bool:
        """Run one journal write about a delivery; False (and the transaction held back in
        memory) if the journal's storage failed."""
        try:
            write()
        except JOURNAL_ERRORS as exc:
            self._hold(tx, exc, delivered_via)
            return False
        with self._lock:
            self._holds.pop(tx.id, None)
        self._journal_recovered()
        return True

    def _hold(self, tx: Transaction, exc: BaseException, delivered_via: str | None = None) -> None:
        """Back off in memory by the retry schedule; one error line per outage, not per try."""
        with self._lock:
            hold = self._holds.setdefault(tx.id, _Hold(0.0))
            hold.unrecorded += 1
            if delivered_via is not None:
                hold.delivered_via = delivered_via
            delay = self.config.retry.delay(tx.attempts + hold.unrecorded)
            hold.until = time.time() + delay
            first = self._journal_error is None
            self._journal_error = str(exc)
        if first:
            log.error(
                "journal %s cannot record deliveries (%s): %s held back, retried on the retry"
                " schedule (next in %.1f s) until storage is back",
                self.journal.db.path,
                exc,
                tx.label,
                delay,
            )
        else:
            log.debug("%s: journal still failing (%s); next try in %.1f s", tx.label, exc, delay)

    def _journal_recovered(self) -> None:
        """A journal write succeeded: storage is back. Deliveries that were only waiting to be
        recorded get recorded at once (without sending the report again)."""
        with self._wake:
            if self._journal_error is None:
                return
            self._journal_error = None
            for hold in self._holds.values():
                if hold.delivered_via is not None:
                    hold.until = 0.0
            self._wake.notify_all()
        log.info("journal %s records again; held deliveries resume", self.journal.db.path)

    # -- for tests and tools ------------------------------------------------------------------

    def wait_delivered(self, transaction_uid: str, timeout: float) -> Transaction | None:
        """Block until a transaction with this UID is delivered (or given up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.journal.db.query(
                "SELECT id FROM transactions WHERE transaction_uid = ? AND state IN (?, 'given_up')"
                " ORDER BY id DESC LIMIT 1",
                (transaction_uid, DELIVERED),
            )
            if rows:
                return self.journal.get(rows[0][0])
            time.sleep(0.05)
        return None
