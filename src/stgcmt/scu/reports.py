"""Reports: the single place where an N-EVENT-REPORT is matched to the journal and acted upon,
whichever association it arrives on (the sending association, the ``send`` listener, the
agent), so the rules (claim exactly once, act only on committed files that were sent, always
answer) hold for every path.

Trust boundary: only the archive that was asked may make us delete anything. The journal
records, per transaction, the archive it was sent to; :class:`TrustPolicy` rejects a new
association whose calling AE title and source address match no archive we wait for nor a
named :class:`Reporter`, and refuses (0110H) a report for a transaction sent elsewhere.

Verification is the exception: an association that proposes *only* the Verification SOP Class
is accepted from any calling AE (still addressed to our AE title), so an archive's "test
connection" works before any transaction is pending. It cannot make us act: it carries no
Storage Commitment context, and a report arriving on it anyway is refused.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

from stgcmt import ul
from stgcmt.config import Timeouts, TlsConfig
from stgcmt.dicom.commitment import (
    EVENT_TYPE_ALL_COMMITTED,
    EVENT_TYPE_FAILURES_EXIST,
    InvalidRequest,
)
from stgcmt.dicom.status import PROCESSING_FAILURE, SUCCESS, describe_status
from stgcmt.dicom.uids import VERIFICATION
from stgcmt.events import (
    AssociationAccepted,
    AssociationClosed,
    AssociationRejected,
    Events,
    Peer,
    SecurityAlert,
)
from stgcmt.faults import crash_point
from stgcmt.scu.files import perform_actions
from stgcmt.scu.options import Reporter
from stgcmt.scu.results import failure_words
from stgcmt.storage.scu_journal import FAILED, PENDING, ScuJournal, Transaction

log = logging.getLogger("stgcmt.scu")

ANSWER_WAIT = 5.0


REPORTED_RECENTLY = 7 * 24 * 3600.0
"""An archive whose report we recorded this recently may still open an association to report
(a repeated delivery, when our answer was lost, must get its Success, not a rejection)."""

SECURITY = "security:"
"""Prefix of every log line about a refused reporter, for log monitoring."""


def ip_literal(text: str) -> str | None:
    """One spelling per IP address (IPv4-mapped IPv6 as IPv4, no scope), so comparisons are
    exact; None if ``text`` is a host name."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


class Resolver:
    """Host name to addresses, each name resolved once (an agent sees many reports from few
    archives, and a name must not mean one thing at accept time and another at report time).
    A failed lookup is not remembered: the next association tries again."""

    def __init__(self) -> None:
        self._known: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def addresses(self, host: str) -> frozenset[str]:
        """The addresses ``host`` resolves to; an IP address is itself (never cached, so
        forgers connecting from many addresses cannot grow the cache)."""
        literal = ip_literal(host)
        if literal is not None:
            return frozenset({literal})
        with self._lock:
            known = self._known.get(host)
        if known is not None:
            return known
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            log.warning("%s cannot resolve %r (nobody matches it for now): %s", SECURITY, host, exc)
            return frozenset()
        found = frozenset(ip_literal(str(info[4][0])) or str(info[4][0]) for info in infos)
        with self._lock:
            self._known[host] = found
        return found

    def same_host(self, name: str, address: str) -> bool:
        """Whether ``address`` (an IP, or a name) is one of the addresses ``name`` has."""
        return bool(self.addresses(name) & self.addresses(address))


class TrustPolicy:
    """Who may make the SCU act: only the archive a transaction was sent to, plus the
    ``reporters`` the user named. Checked twice on a new association: when it is requested
    (is this any archive we asked, or a named reporter?) and for each report (was this
    transaction sent to this archive?)."""

    def __init__(self, journal: ScuJournal, reporters: Sequence[Reporter] = ()) -> None:
        self.journal = journal
        self.reporters = tuple(reporters)
        self.resolver = Resolver()

    def _is(self, aet: str | None, host: str | None, peer: ul.PeerInfo) -> bool:
        return (
            aet is not None
            and host is not None
            and aet == peer.calling_aet
            and self.resolver.same_host(host, peer.host)
        )

    def named_reporter(self, peer: ul.PeerInfo) -> Reporter | None:
        return next((r for r in self.reporters if self._is(r.aet, r.host, peer)), None)

    def admits(self, peer: ul.PeerInfo) -> str | None:
        """None if a new association from ``peer`` may report; else why not."""
        if self.named_reporter(peer):
            return None
        since = time.time() - REPORTED_RECENTLY
        for aet, host in sorted(self.journal.reporting_archives(since)):
            if self._is(aet, host, peer):
                return None
        return "calling AE title and address match no archive we are waiting for, nor a --reporter"

    def may_report(self, tx: Transaction, peer: ul.PeerInfo, same: bool) -> str | None:
        """None if ``peer`` may report for ``tx``; else why not. On our own sending association
        the peer is the archive we connected to, port included; a named reporter only counts
        on new associations (it is how it reaches us)."""
        if self._is(tx.archive_aet, tx.archive_host, peer):
            if not same or tx.archive_port == peer.port:
                return None
        elif not same and self.named_reporter(peer):
            return None
        return f"{tx.label} was sent to {tx.archive}, not to {peer}"


def verification_only(peer: ul.PeerInfo) -> bool:
    """Whether ``peer``'s association request proposed Verification and nothing else."""
    return bool(peer.proposed) and set(peer.proposed) == {VERIFICATION}


def security_event(peer: ul.PeerInfo, what: str, why: str) -> None:
    """One recognisable WARNING per refused reporter: who (AE, host, port), what, why."""
    log.warning(
        "%s %s from calling AE %r at %s port %d (called %r): %s; nothing deleted",
        SECURITY,
        what,
        peer.calling_aet,
        peer.host,
        peer.port,
        peer.called_aet,
        why,
    )


class ReportHandler:
    """Matches N-EVENT-REPORTs to the journal and acts on them; shared by the sending
    association, the ``send`` listener and the agent.

    Every report gets an answer: Success when it was recorded (or had already been recorded:
    the archive is retrying a delivery whose response it lost), 0110H processing failure when it
    could not be used (unknown Transaction UID, undecodable, unknown event type, journal error,
    or a reporter that is not the archive the transaction was sent to).
    """

    def __init__(
        self,
        journal: ScuJournal,
        aet: str,
        reporters: Sequence[Reporter] = (),
        events: Events | None = None,
    ) -> None:
        self.journal = journal
        self.aet = aet
        self.events = events or Events()
        self.trust = TrustPolicy(journal, reporters)
        self._changed = threading.Condition()
        self._answering: set[int] = set()

    def accept(self, peer: ul.PeerInfo) -> ul.Rejection | None:
        """Only associations addressed to our AE title (anything else is misdirected), from an
        archive we asked or a named reporter (anything else may be a forger). Each decision is
        an event."""
        rejection = self._admit(peer)
        if rejection is None:
            self.events.emit(AssociationAccepted(Peer.of(peer)))
        return rejection

    def _admit(self, peer: ul.PeerInfo) -> ul.Rejection | None:
        if peer.called_aet != self.aet:
            log.warning(
                "rejected association from %s: called AE %r is not ours (%r)",
                peer,
                peer.called_aet,
                self.aet,
            )
            self._rejected(peer, "called-aet", f"called AE {peer.called_aet!r} is not ours")
            return ul.Rejection("called-aet")
        if verification_only(peer):
            log.info(
                "accepted association from %s (called %r) proposing only Verification: C-ECHO is"
                " answered for anyone, reports need the archive asked or a --reporter",
                peer,
                peer.called_aet,
            )
            return None
        why = self.trust.admits(peer)
        if why is not None:
            security_event(peer, "association rejected (calling AE title not recognised)", why)
            self._rejected(peer, "calling-aet", why)
            return ul.Rejection("calling-aet")
        return None

    def _rejected(self, peer: ul.PeerInfo, reason: str, why: str) -> None:
        who = Peer.of(peer)
        self.events.emit(AssociationRejected(who, reason, why))
        self.events.emit(SecurityAlert("rejected-association", why, who))

    def _forged(self, peer: ul.PeerInfo, what: str, why: str) -> int:
        """A report from someone who may not make us act: logged, alerted, refused."""
        security_event(peer, what, why)
        self.events.emit(SecurityAlert("forged-report", f"{what}: {why}", Peer.of(peer)))
        return PROCESSING_FAILURE

    def handlers(self, via: str) -> ul.Handlers:
        """Handlers for an association; ``via`` says which kind ('new' or 'same')."""
        return ul.Handlers(
            accept=self.accept,
            n_event_report=lambda link, event: self.on_report(event, f"{via} association"),
            n_event_report_answered=self._answered,
            closed=lambda link: self.events.emit(AssociationClosed(Peer.of(link.peer), {})),
            tls_failed=lambda host, port, why: self.events.emit(
                SecurityAlert("tls-handshake", why, Peer("", self.aet, host, port))
            ),
        )

    def on_report(self, event: ul.EventReport, via: str) -> int:
        peer = event.peer
        with self._changed:
            self._answering.add(peer.association_id)
        try:
            status = self._handle(event, via)
        except Exception:  # never leave the archive without an answer
            log.exception("N-EVENT-REPORT from %s could not be processed", peer)
            status = PROCESSING_FAILURE
        with self._changed:
            self._changed.notify_all()
        return status

    def _answered(self, link: ul.Link) -> None:
        with self._changed:
            self._answering.discard(link.peer.association_id)
            self._changed.notify_all()

    def wait_answered(self, assoc: ul.Association) -> None:
        """Before releasing an association, let the answer to a report on it leave."""
        with self._changed:
            self._changed.wait_for(
                lambda: assoc.peer.association_id not in self._answering or not assoc.is_open,
                ANSWER_WAIT,
            )

    def _handle(self, event: ul.EventReport, via: str) -> int:
        peer = event.peer
        try:
            if event.event_type_id not in (EVENT_TYPE_ALL_COMMITTED, EVENT_TYPE_FAILURES_EXIST):
                raise InvalidRequest(PROCESSING_FAILURE, f"Event Type ID {event.event_type_id}")
            report = event.report()
        except InvalidRequest as exc:
            return _refuse(peer, f"unusable report: {exc}")
        if verification_only(peer):
            return self._forged(
                peer,
                f"N-EVENT-REPORT on {via} refused",
                "the association proposed only Verification (accepted from anyone for C-ECHO)",
            )
        sent = self.journal.find(report.transaction_uid)
        if sent is None:
            return _refuse(peer, f"unknown Transaction UID {report.transaction_uid}")
        why = self.trust.may_report(sent, peer, same=via.startswith("same"))
        if why is not None:
            return self._forged(peer, f"N-EVENT-REPORT on {via} refused", why)
        outcome = self.journal.record_report(report, f"{via} from {peer}")
        if outcome.tx is None:
            return _refuse(peer, f"unknown Transaction UID {report.transaction_uid}")
        tx = outcome.tx
        if not outcome.claimed:
            log.info(
                "%s: report from %s again (already %s): acknowledged", tx.label, peer, tx.state
            )
            return SUCCESS
        crash_point("scu.report.after_record")
        self._log_report(tx, peer, via, outcome.ignored)
        perform_actions(self.journal, self.journal.due_actions(tx.id))
        return SUCCESS

    def _log_report(self, tx: Transaction, peer: ul.PeerInfo, via: str, ignored: int) -> None:
        log.info(
            "%s: report from %s on %s: %d committed, %d failed%s",
            tx.label,
            peer,
            via,
            tx.n_committed,
            tx.n_failed,
            f"; {ignored} references we never asked about ignored" if ignored else "",
        )
        for row in self.journal.files(tx.id, FAILED):
            log.warning("%s: not committed: %s (%s)", tx.label, row.path, failure_words(row))

    def wait_settled(
        self, tx_ids: Sequence[int], deadline: float, stop: Callable[[], bool]
    ) -> bool:
        """Wait until none of these transactions is pending (a report reached this process or
        another one sharing the journal), the deadline passes, or ``stop()`` is true."""
        while True:
            if not any(self.journal.get(tx_id).state == PENDING for tx_id in tx_ids):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop():
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.2))


def _refuse(peer: ul.PeerInfo, reason: str) -> int:
    log.warning(
        "N-EVENT-REPORT from %s answered %s: %s; nothing done",
        peer,
        describe_status(PROCESSING_FAILURE),
        reason,
    )
    return PROCESSING_FAILURE


def report_server(
    handler: ReportHandler,
    bind: str,
    port: int,
    timeouts: Timeouts | None = None,
    tls: TlsConfig | None = None,
    max_pdu: int | None = None,
) -> ul.Server:
    """A listener for reports on new associations (requester SCP role, or no role item)."""
    options = {"max_pdu": max_pdu} if max_pdu else {}
    return ul.listen(
        handler.aet,
        bind,
        port,
        handler.handlers("new"),
        storage=False,
        commitment=True,
        timeouts=timeouts,
        tls=tls,
        **options,
    )
