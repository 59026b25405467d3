"""Report delivery: the N-EVENT-REPORT sent on the association the transaction's route allows
(the requesting one, any open one of that AE, or a new one), retried with exponential backoff
until delivered or given up; when the journal cannot record, deliveries are held back in memory
on the same schedule so a full or read-only disk cannot turn into a report storm."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stgcmt import ul
from stgcmt.config import REPORT_SYNTAXES, RemoteAE, ScpConfig
from stgcmt.dicom.commitment import CommitmentReport
from stgcmt.dicom.status import describe_status
from stgcmt.events import Events, ReportDelivered, ReportFailed, ReportGivenUp
from stgcmt.faults import crash_point
from stgcmt.scp.requesters import Requesters
from stgcmt.storage import STORAGE_ERRORS
from stgcmt.storage.interfaces import ScpJournal
from stgcmt.storage.scp_journal import DELIVERED, FAILED, REPORT_PENDING, Transaction

log = logging.getLogger("stgcmt.scp")

DELIVERY_THREADS = 4
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


class Delivery:
    """Sends due reports on a small thread pool. ``wake`` is the SCP's condition (its lock
    guards this state; it is notified when a delivery ends or held deliveries may resume)."""

    def __init__(
        self,
        config: ScpConfig,
        journal: ScpJournal,
        requesters: Requesters,
        wake: threading.Condition,
        events: Events | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.requesters = requesters
        self._wake = wake
        self.events = events or Events()
        self._stopping = False
        self._in_flight: set[int] = set()
        self._holds: dict[int, _Hold] = {}
        self._elsewhere: dict[int, float] = {}
        """Transactions another node of a cluster holds, and when to look again."""
        self._poll = min(60.0, config.database.lease / 4)
        """Another node's expired lease is noticed within a quarter of the lease."""
        self._journal_error: str | None = None  # set while the journal cannot record
        self._pool = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="stgcmt-report")

    def stop(self) -> None:
        """No new delivery starts; wait for those under way."""
        with self._wake:
            self._stopping = True
        self._pool.shutdown(wait=True)

    def deliver_due(self, unanswered: set[int], reassociated: set[str]) -> float:
        """Start every delivery that is due; returns when the next one is due (epoch)."""
        now = time.time()
        next_due = now + self._poll
        with self._wake:
            self._elsewhere = {tx_id: at for tx_id, at in self._elsewhere.items() if at > now}
        for tx in self.journal.in_state(REPORT_PENDING):
            if tx.id in unanswered:
                continue
            with self._wake:
                hold = self._holds.get(tx.id)
                elsewhere = self._elsewhere.get(tx.id, 0.0)
            if elsewhere > now:
                next_due = min(next_due, elsewhere)
                continue
            if hold is not None and hold.until > now:
                next_due = min(next_due, hold.until)
                continue
            if hold is not None and hold.delivered_via is not None:
                if not self._record_delivery(tx, hold.delivered_via):
                    next_due = min(next_due, hold.until)  # the hold was extended in place
                continue
            due = tx.next_attempt_at or now
            if due <= now or tx.calling_aet in reassociated:
                self._submit(tx)
            else:
                next_due = min(next_due, due)
        return next_due

    def _submit(self, tx: Transaction) -> None:
        with self._wake:
            if tx.id in self._in_flight or self._stopping:
                return
            self._in_flight.add(tx.id)
        self._pool.submit(self._deliver_safely, tx)

    def _deliver_safely(self, tx: Transaction) -> None:
        try:
            self._deliver(tx)
        except STORAGE_ERRORS as exc:
            self._hold(tx, exc)
        except Exception as exc:
            log.exception("%s: delivery error", tx.label)
            self._failed_attempt(tx, f"internal error: {exc}", None)
        finally:
            with self._wake:
                self._in_flight.discard(tx.id)
                self._wake.notify_all()

    def in_flight(self, tx_id: int) -> bool:
        """Whether a delivery attempt for this transaction is under way."""
        with self._wake:
            return tx_id in self._in_flight

    def retry_now(self, tx: Transaction) -> None:
        """An administrator asked: the next attempt is due now (even one held back in memory);
        the attempts count and so the schedule after it are kept."""
        with self._wake:
            hold = self._holds.get(tx.id)
            if hold is not None:
                hold.until = 0.0
        self.journal.postpone(tx.id, tx.last_error or "retry requested", time.time())

    def _deliver(self, tx: Transaction) -> None:
        # Fresh (an administrator may have given up or re-verified it), and ours alone: another
        # node of a cluster holding its lease delivers it, not us.
        claimed = self.journal.claim(tx.id)
        if claimed is None:
            with self._wake:  # not again at once (the end of this attempt wakes the worker)
                self._elsewhere[tx.id] = time.time() + self._poll
            return
        if claimed.state != REPORT_PENDING or self._give_up_if_too_old(claimed):
            return
        tx = claimed
        report = self.journal.report(tx, self.config.aet)
        try:
            outcome = self._send_report(tx, report)
        except (ul.AssociationError, OSError) as exc:  # only opening a new one raises
            self._failed_attempt(tx, str(exc), "new")
            return
        if outcome is None:
            reason = f"waiting for {tx.calling_aet} to associate again (no address to report to)"
            if tx.last_error != reason:
                log.info("%s: %s", tx.label, reason)
            until = time.time() + self.config.retry.cap
            self._record(tx, lambda: self.journal.postpone(tx.id, reason, until))
            return
        status, via = outcome
        if not ul.is_success(status):
            error = f"N-EVENT-REPORT on {via}: {describe_status(status)}"
            self._failed_attempt(tx, error, _route(via))
            return
        self._note_attempt(tx, _route(via), DELIVERED)
        crash_point("scp.deliver.after_answer")
        if not self._record_delivery(tx, via):
            return
        self.events.emit(
            ReportDelivered(
                tx.calling_aet,
                tx.transaction_uid,
                _route(via),
                len(report.committed),
                len(report.failed),
                time.time() - tx.received_at,
            )
        )
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
            self.events.emit(ReportGivenUp(tx.calling_aet, tx.transaction_uid, error))
        return True

    def _send_report(
        self, tx: Transaction, report: CommitmentReport
    ) -> tuple[int | None, str] | None:
        """Send on the association the mode allows; (status, where) or None when there is no
        way to reach the requester now. Raises AssociationError if a new one fails."""
        remote = self.config.remote(tx.calling_aet)
        link = self.requesters.link_for(tx, known=remote is not None)
        if link is not None:
            status = link.n_event_report(report.event_type_id, report)
            if status is not None or tx.report_assoc != "auto" or remote is None:
                return status, f"the association {link.peer} opened"
            log.info("%s: requesting association closed under the report", tx.label)
        if tx.report_assoc == "same" or remote is None:
            return None
        status = self._report_on_new_association(remote, report)
        return status, f"a new association to {remote}"

    def _report_on_new_association(self, remote: RemoteAE, report: CommitmentReport) -> int | None:
        """Open an association asking for the SCP role (IHE RAD-10) and send the report, as
        the peer's profile says: its transfer syntaxes (default Implicit VR Little Endian
        alone: every peer must accept it), maximum PDU, TLS and timeouts."""
        profile = remote.profile
        plan = ul.ContextPlan(
            commitment="scp", commitment_syntaxes=profile.transfer_syntaxes or REPORT_SYNTAXES
        )
        with ul.open_association(
            self.config.aet,
            remote,
            plan,
            timeouts=profile.timeouts.over(self.config.timeouts),
            max_pdu=profile.max_pdu or self.config.max_pdu,
            tls=profile.tls_over(self.config.tls),
        ) as association:
            return association.n_event_report(report.event_type_id, report)

    def _failed_attempt(self, tx: Transaction, error: str, route: str | None) -> None:
        with self._wake:
            hold = self._holds.get(tx.id)
        attempts = tx.attempts + 1 + (hold.unrecorded if hold else 0)
        delay = self.config.retry.delay(attempts)
        next_at = time.time() + delay
        self._note_attempt(tx, route, FAILED, error, next_at)
        if not self._record(tx, lambda: self.journal.record_failed_attempt(tx.id, error, next_at)):
            return
        self.events.emit(ReportFailed(tx.calling_aet, tx.transaction_uid, error, next_at))
        log.warning(
            "%s: delivery attempt %d failed: %s; next attempt in %.1f s",
            tx.label,
            attempts,
            error,
            delay,
        )

    def _note_attempt(
        self,
        tx: Transaction,
        route: str | None,
        outcome: str,
        error: str | None = None,
        next_at: float | None = None,
    ) -> None:
        """Add the attempt to the journal's history, before the bookkeeping that decides what
        happens next (whose durable commit takes this row along). A journal that cannot write
        it loses only this line of history: that write's own failure holds the delivery."""
        try:
            self.journal.record_attempt(tx.id, route, outcome, error, next_at)
        except STORAGE_ERRORS as exc:
            log.debug("%s: attempt not kept in the history (%s)", tx.label, exc)

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
        except STORAGE_ERRORS as exc:
            self._hold(tx, exc, delivered_via)
            return False
        with self._wake:
            self._holds.pop(tx.id, None)
        self.journal_recovered()
        return True

    def _hold(self, tx: Transaction, exc: BaseException, delivered_via: str | None = None) -> None:
        """Back off in memory by the retry schedule; one error line per outage, not per try."""
        with self._wake:
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
                self.journal.path,
                exc,
                tx.label,
                delay,
            )
        else:
            log.debug("%s: journal still failing (%s); next try in %.1f s", tx.label, exc, delay)

    def journal_recovered(self) -> None:
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
        log.info("journal %s records again; held deliveries resume", self.journal.path)


def _route(via: str) -> str:
    """``same`` for a report sent on an association the requester opened, else ``new``."""
    return "same" if via.startswith("the association") else "new"
