"""The Storage Commitment SCU: send files, ask the archive to commit them, and release local
copies only for what the archive has committed.

:func:`send` stores files with C-STORE, requests commitment with N-ACTION and waits for the
N-EVENT-REPORT on the sending association, on its own listener, or through a journal shared with
a running :class:`~stgcmt.scu.agent.Agent`. :class:`ReportHandler` is the single place where a
report is matched to the journal and acted upon, whichever association it arrives on, so the
rules (claim exactly once, act only on committed files that were sent, always answer) hold
for every path.

Trust boundary: only the archive that was asked may make us delete anything. The journal
records, per transaction, the archive it was sent to; :class:`TrustPolicy` rejects a new
association whose calling AE title and source address match no archive we wait for nor a
named :class:`Reporter`, and refuses (0110H) a report for a transaction sent elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Literal

from stgcmt import ul as net
from stgcmt.config import ConfigError, RemoteAE, Timeouts, TlsConfig, validate_aet
from stgcmt.dicom.commitment import (
    EVENT_TYPE_ALL_COMMITTED,
    EVENT_TYPE_FAILURES_EXIST,
    CommitmentRequest,
    InvalidRequest,
)
from stgcmt.dicom.status import PROCESSING_FAILURE, SUCCESS, describe_status
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, new_transaction_uid
from stgcmt.faults import crash_point
from stgcmt.scu.dicomfiles import GroupBy, LocalFile, Skipped, scan, split
from stgcmt.storage.instances import _fsync_path
from stgcmt.storage.scu_journal import (
    ABORTED,
    COMMITTED,
    FAILED,
    PENDING,
    QUEUED,
    STORE_FAILED,
    STORING,
    FileRow,
    OnCommit,
    ScuJournal,
    Transaction,
)

log = logging.getLogger("stgcmt.scu")

ReportAssoc = Literal["new", "same", "any"]
REPORT_ASSOC_CHOICES: tuple[str, ...] = ("new", "same", "any")
DEFAULT_AET = "STGCMT_SCU"
DEFAULT_LISTEN_BIND = "0.0.0.0"
ANY_SAME_ASSOC_WAIT = 10.0
MAX_WAITING_ASSOCIATIONS = 8
ANSWER_WAIT = 5.0

EXIT_COMMITTED = 0
EXIT_FAILED = 1
EXIT_PENDING = 2


class UsageError(ValueError):
    """Options that cannot work together, or nothing to send; the message says why."""


# -- acting on committed files -------------------------------------------------------------------


def act_on(tx: Transaction, row: FileRow) -> tuple[str, str]:
    """Delete or move one committed file; returns the new action state and a note. Idempotent:
    a file already gone counts as done, so a restart can simply run every ``due`` action again.
    A file whose size or modification time changed since it was sent is not the file the
    archive committed, and is kept."""
    path = Path(row.path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "done", "already gone"
    if (stat.st_size, stat.st_mtime_ns) != (row.size, row.mtime_ns):
        return "skipped", "kept: the file changed after it was sent"
    if tx.on_commit == "delete":
        path.unlink(missing_ok=True)
        return "done", "deleted"
    target = move_without_overwrite(path, Path(tx.move_dir or "."), row.relpath)
    return "done", f"moved to {target}"


def move_without_overwrite(src: Path, target_dir: Path, relpath: str) -> Path:
    """Move ``src`` to ``target_dir/relpath``, or ``name.1.dcm``, ``name.2.dcm``... if that is
    taken: a hard link never replaces an existing file, and the source is removed only once the
    new name is durable. A link left by a crash before the unlink is recognised and reused."""
    wanted = target_dir / relpath
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for candidate in _names(wanted):
        if candidate.exists() and os.path.samefile(src, candidate):
            break
        try:
            _link_or_copy(src, candidate)
        except FileExistsError:
            continue
        break
    _fsync_path(candidate.parent)
    src.unlink()
    return candidate


def _names(wanted: Path) -> Iterable[Path]:
    yield wanted
    for n in count(1):
        yield wanted.with_name(f"{wanted.stem}.{n}{wanted.suffix}")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
        shutil.copy2(src, temp)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(temp, dst)
        finally:
            temp.unlink()


def perform_actions(journal: ScuJournal, rows: Iterable[tuple[Transaction, FileRow]]) -> int:
    """Run due delete/move actions, recording each; an error leaves the action due (retried by
    the next agent start). Returns how many were done."""
    done = 0
    for tx, row in rows:
        try:
            state, note = act_on(tx, row)
        except OSError as exc:
            log.error("%s: cannot %s %s (will retry): %s", tx.label, tx.on_commit, row.path, exc)
            journal.record_action(tx.id, row.seq, "due", f"error: {exc}")
            continue
        journal.record_action(tx.id, row.seq, state, note)
        crash_point("scu.purge.mid")
        log_level = logging.INFO if state == "done" else logging.WARNING
        log.log(log_level, "%s: %s: %s", tx.label, row.path, note)
        done += state == "done"
    return done


def finish_due_actions(journal: ScuJournal) -> None:
    """After a crash or restart: finish every delete/move recorded as due."""
    due = journal.due_actions()
    if due:
        log.info("finishing %d delete/move actions left from before", len(due))
        perform_actions(journal, due)


# -- reports -------------------------------------------------------------------------------------


REPORTED_RECENTLY = 7 * 24 * 3600.0
"""An archive whose report we recorded this recently may still open an association to report
(a repeated delivery, when our answer was lost, must get its Success, not a rejection)."""

SECURITY = "security:"
"""Prefix of every log line about a refused reporter, for log monitoring."""


@dataclass(frozen=True)
class Reporter:
    """Someone besides the archive asked who may report on a new association: ``AET@HOST``
    (dcm4che style; a ``:PORT`` is accepted and ignored, since a reporter connects from any
    port). The AE title alone is not enough: anyone can claim an AE title."""

    aet: str
    host: str

    @classmethod
    def parse(cls, text: str) -> Reporter:
        """``AET@HOST``, ``AET@HOST:PORT``, ``AET@[IPv6]`` or ``AET@[IPv6]:PORT``."""
        aet, sep, address = text.rpartition("@")
        if not sep or not aet or not address:
            raise ConfigError(f"reporter {text!r} is not written AET@HOST")
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port = rest.removeprefix(":") if rest.startswith(":") else None
            if rest and port is None:
                raise ConfigError(f"reporter {text!r} is not written AET@[IPv6]:PORT")
        elif address.count(":") == 1:
            host, port = address.split(":")
        else:
            host, port = address, None
        if not host or (port is not None and not port.isdigit()):
            raise ConfigError(f"reporter {text!r} is not written AET@HOST or AET@HOST:PORT")
        return cls(validate_aet(aet), host)

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}"


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

    def _is(self, aet: str | None, host: str | None, peer: net.PeerInfo) -> bool:
        return (
            aet is not None
            and host is not None
            and aet == peer.calling_aet
            and self.resolver.same_host(host, peer.host)
        )

    def named_reporter(self, peer: net.PeerInfo) -> Reporter | None:
        return next((r for r in self.reporters if self._is(r.aet, r.host, peer)), None)

    def admits(self, peer: net.PeerInfo) -> str | None:
        """None if a new association from ``peer`` may report; else why not."""
        if self.named_reporter(peer):
            return None
        since = time.time() - REPORTED_RECENTLY
        for aet, host in sorted(self.journal.reporting_archives(since)):
            if self._is(aet, host, peer):
                return None
        return "calling AE title and address match no archive we are waiting for, nor a --reporter"

    def may_report(self, tx: Transaction, peer: net.PeerInfo, same: bool) -> str | None:
        """None if ``peer`` may report for ``tx``; else why not. On our own sending association
        the peer is the archive we connected to, port included; a named reporter only counts
        on new associations (it is how it reaches us)."""
        if self._is(tx.archive_aet, tx.archive_host, peer):
            if not same or tx.archive_port == peer.port:
                return None
        elif not same and self.named_reporter(peer):
            return None
        return f"{tx.label} was sent to {tx.archive}, not to {peer}"


def security_event(peer: net.PeerInfo, what: str, why: str) -> None:
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

    def __init__(self, journal: ScuJournal, aet: str, reporters: Sequence[Reporter] = ()) -> None:
        self.journal = journal
        self.aet = aet
        self.trust = TrustPolicy(journal, reporters)
        self._changed = threading.Condition()
        self._answering: set[int] = set()

    def accept(self, peer: net.PeerInfo) -> net.Rejection | None:
        """Only associations addressed to our AE title (anything else is misdirected), from an
        archive we asked or a named reporter (anything else may be a forger)."""
        if peer.called_aet != self.aet:
            log.warning(
                "rejected association from %s: called AE %r is not ours (%r)",
                peer,
                peer.called_aet,
                self.aet,
            )
            return net.Rejection("called-aet")
        why = self.trust.admits(peer)
        if why is not None:
            security_event(peer, "association rejected (calling AE title not recognised)", why)
            return net.Rejection("calling-aet")
        return None

    def handlers(self, via: str) -> net.Handlers:
        """Handlers for an association; ``via`` says which kind ('new' or 'same')."""
        return net.Handlers(
            accept=self.accept,
            n_event_report=lambda link, event: self.on_report(event, f"{via} association"),
            n_event_report_answered=self._answered,
        )

    def on_report(self, event: net.EventReport, via: str) -> int:
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

    def _answered(self, link: net.Link) -> None:
        with self._changed:
            self._answering.discard(link.peer.association_id)
            self._changed.notify_all()

    def wait_answered(self, assoc: net.Association) -> None:
        """Before releasing an association, let the answer to a report on it leave."""
        with self._changed:
            self._changed.wait_for(
                lambda: assoc.peer.association_id not in self._answering or not assoc.is_open,
                ANSWER_WAIT,
            )

    def _handle(self, event: net.EventReport, via: str) -> int:
        peer = event.peer
        try:
            if event.event_type_id not in (EVENT_TYPE_ALL_COMMITTED, EVENT_TYPE_FAILURES_EXIST):
                raise InvalidRequest(PROCESSING_FAILURE, f"Event Type ID {event.event_type_id}")
            report = event.report()
        except InvalidRequest as exc:
            return _refuse(peer, f"unusable report: {exc}")
        sent = self.journal.find(report.transaction_uid)
        if sent is None:
            return _refuse(peer, f"unknown Transaction UID {report.transaction_uid}")
        why = self.trust.may_report(sent, peer, same=via.startswith("same"))
        if why is not None:
            security_event(peer, f"N-EVENT-REPORT on {via} refused", why)
            return PROCESSING_FAILURE
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

    def _log_report(self, tx: Transaction, peer: net.PeerInfo, via: str, ignored: int) -> None:
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


def _refuse(peer: net.PeerInfo, reason: str) -> int:
    log.warning(
        "N-EVENT-REPORT from %s answered %s: %s; nothing done",
        peer,
        describe_status(PROCESSING_FAILURE),
        reason,
    )
    return PROCESSING_FAILURE


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


def report_server(
    handler: ReportHandler,
    bind: str,
    port: int,
    timeouts: Timeouts | None = None,
    tls: TlsConfig | None = None,
) -> net.Server:
    """A listener for reports on new associations (requester SCP role, or no role item)."""
    return net.Server(
        handler.aet,
        bind,
        port,
        handler.handlers("new"),
        storage=False,
        commitment=True,
        timeouts=timeouts,
        tls=tls,
    )


# -- send ----------------------------------------------------------------------------------------


@dataclass
class SendOptions:
    aet: str = DEFAULT_AET
    report_assoc: ReportAssoc = "any"
    same_assoc_wait: float | None = None
    """How long the sending association waits for a report on it (default: the whole
    ``timeout`` with 'same', 10 s with 'any')."""
    timeout: float = 60.0
    on_commit: OnCommit = "keep"
    move_dir: Path | None = None
    group_by: GroupBy = None
    max_refs: int | None = None
    listen_port: int | None = None
    listen_bind: str = DEFAULT_LISTEN_BIND
    timeouts: Timeouts = field(default_factory=Timeouts)
    tls: TlsConfig = field(default_factory=TlsConfig)
    """DICOM TLS for the associations we open and for our listener."""
    reporters: tuple[Reporter, ...] = ()
    """Who else may report on a new association, besides the archive we send to."""

    def checked(self) -> SendOptions:
        if self.report_assoc not in REPORT_ASSOC_CHOICES:
            raise UsageError(f"report_assoc must be one of {', '.join(REPORT_ASSOC_CHOICES)}")
        if self.report_assoc == "new" and self.listen_port is None:
            raise UsageError(
                "reports on a new association need a listener: give --listen PORT"
                " (or use --report-assoc same/any)"
            )
        if self.on_commit == "move" and self.move_dir is None:
            raise UsageError("moving committed files needs a target directory")
        if self.max_refs is not None and self.max_refs < 1:
            raise UsageError("--max-refs must be at least 1")
        if self.timeout < 0 or (self.same_assoc_wait or 0) < 0:
            raise UsageError("waiting times cannot be negative")
        try:
            self.tls.checked()
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        return self

    @property
    def same_wait(self) -> float:
        if self.report_assoc == "new":
            return 0.0
        default = self.timeout if self.report_assoc == "same" else ANY_SAME_ASSOC_WAIT
        wait = default if self.same_assoc_wait is None else self.same_assoc_wait
        return min(wait, self.timeout)


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


ProgressCallback = Callable[[int, int], None]
"""Called after each C-STORE with (files done, files in total)."""


def send(
    archive: RemoteAE,
    paths: Sequence[Path],
    journal: ScuJournal,
    options: SendOptions | None = None,
    progress: ProgressCallback | None = None,
) -> SendResult:
    """Send files and wait (bounded) for their commitment. Raises :class:`UsageError` for
    unusable options or no DICOM files, :class:`net.AssociationError` or ``OSError`` when the
    archive cannot be reached or our listener cannot start (nothing is then deleted)."""
    options = (options or SendOptions()).checked()
    found = scan(paths)
    if not found.files:
        raise UsageError(f"no DICOM files found in {', '.join(map(str, paths))}")
    groups = split(found.files, options.group_by, options.max_refs)
    return _Sender(archive, journal, options, progress).run(groups, found.skipped)


_Work = tuple[Transaction, int, LocalFile]
"""A file to send: its transaction, its number in it, the file."""


class _Sender:
    """One ``send`` run: its transactions, the association in use, and its listener."""

    def __init__(
        self,
        archive: RemoteAE,
        journal: ScuJournal,
        options: SendOptions,
        progress: ProgressCallback | None,
    ) -> None:
        self.archive = archive
        self.journal = journal
        self.options = options
        self.progress = progress
        self.handler = ReportHandler(journal, options.aet, options.reporters)
        self.txs: list[tuple[Transaction, list[LocalFile]]] = []
        self._opened: list[net.Association] = []
        self._deadline = 0.0
        """When waiting for reports ends: ``timeout`` after the first N-ACTION."""

    def run(self, groups: list[list[LocalFile]], skipped: list[Skipped]) -> SendResult:
        with contextlib.ExitStack() as stack:
            if self.options.listen_port is not None:
                server = report_server(
                    self.handler,
                    self.options.listen_bind,
                    self.options.listen_port,
                    self.options.timeouts,
                    self.options.tls,
                )
                stack.enter_context(server)
                log.info(
                    "listening for reports as %s on %s:%d",
                    self.options.aet,
                    self.options.listen_bind,
                    server.port,
                )
            self._create(groups)
            try:
                self._store_and_request()
            finally:
                self._abort_unrequested()
            self.handler.wait_settled(self._ids(), self._deadline, lambda: False)
        return self._result(skipped)

    def _ids(self) -> list[int]:
        return [tx.id for tx, _ in self.txs]

    def _create(self, groups: list[list[LocalFile]]) -> None:
        for files in groups:
            tx = self.journal.create(
                new_transaction_uid(),
                self.options.aet,
                self.archive,
                files,
                self.options.on_commit,
                self.options.move_dir,
            )
            self.txs.append((tx, files))
        log.info(
            "%d files in %d transactions for %s (journal %s)",
            sum(len(files) for _, files in self.txs),
            len(self.txs),
            self.archive,
            self.journal.path,
        )

    def _open(self, contexts: Sequence[tuple[str, str]]) -> net.Association:
        via = "new" if self.options.report_assoc == "new" else "same"
        handlers = self.handler.handlers(via) if via == "same" else None
        assoc = net.open_association(
            self.options.aet,
            self.archive,
            # A storage association survives an archive without Storage Commitment: the files
            # are stored, and the commitment step then fails for them (nothing is deleted).
            net.ContextPlan(storage=contexts, commitment="scu", require_commitment=not contexts),
            handlers=handlers,
            timeouts=self.options.timeouts,
            tls=self.options.tls,
        )
        self._opened.append(assoc)
        return assoc

    def _store_and_request(self) -> None:
        """Store everything, then request commitment. The last storage association carries
        the first N-ACTION; each further transaction gets its own association (see
        :meth:`_request_all`)."""
        try:
            self._request_all(self._store_all())
        finally:
            for assoc in self._opened:
                if assoc.is_open:
                    assoc.abort()

    def _store_all(self) -> net.Association:
        work = [(tx, seq, f) for tx, files in self.txs for seq, f in enumerate(files)]
        plans = net.plan_storage_associations((f.context for _, _, f in work), reserve=1)
        done = 0
        for n, contexts in enumerate(plans):
            assoc = self._open(contexts)
            wanted = set(contexts)
            for item in work:
                if item[2].context in wanted:
                    assoc = self._store(assoc, contexts, item)
                    done += 1
                    if self.progress:
                        self.progress(done, len(work))
            if n < len(plans) - 1:
                assoc.release()
        return assoc

    def _store(
        self, assoc: net.Association, contexts: Sequence[tuple[str, str]], item: _Work
    ) -> net.Association:
        """C-STORE one file; without a response (outcome unknown) re-send it once on a new
        association. Returns the association to continue on."""
        tx, seq, f = item
        if not assoc.accepts(*f.context):
            error = f"the archive rejected the presentation context {f.context[0]} / {f.context[1]}"
            return self._store_failed(assoc, contexts, item, None, error)
        status, error = _c_store(assoc, f.path)
        if status is None and error is None:
            log.warning("no response to C-STORE of %s: re-sending on a new association", f.path)
            assoc = self._reopen(assoc, contexts)
            status, error = _c_store(assoc, f.path)
        if status is None or not net.is_success(status):
            error = error or describe_status(status)
            return self._store_failed(assoc, contexts, item, status, error)
        self.journal.record_store(tx.id, seq, status, True)
        log.debug("C-STORE %s: %s", f.path, describe_status(status))
        return assoc

    def _store_failed(
        self,
        assoc: net.Association,
        contexts: Sequence[tuple[str, str]],
        item: _Work,
        status: int | None,
        error: str,
    ) -> net.Association:
        tx, seq, f = item
        self.journal.record_store(tx.id, seq, status, False, error)
        log.warning("C-STORE of %s failed: %s; the file is kept", f.path, error)
        return assoc if assoc.is_open else self._reopen(assoc, contexts)

    def _reopen(
        self, assoc: net.Association, contexts: Sequence[tuple[str, str]]
    ) -> net.Association:
        if assoc.is_open:
            assoc.abort()
        return self._open(contexts)

    def _request_all(self, first: net.Association) -> None:
        """One N-ACTION per association: pynetdicom, waiting for an N-ACTION response, takes a
        report arriving first for an earlier transaction as an invalid response and aborts.
        Each association stays open for its same-association wait, at most
        ``MAX_WAITING_ASSOCIATIONS`` at a time (archives limit concurrent associations)."""
        if not first.accepts_commitment:
            self._commitment_unsupported()
            return
        waiting: deque[tuple[net.Association, int, float]] = deque()
        reuse: net.Association | None = first
        self._deadline = time.monotonic() + self.options.timeout
        for tx, _ in self.txs:
            crash_point("scu.send.after_store")
            references = self.journal.mark_requested(tx.id)
            if not references:
                self.journal.close_unrequested(tx.id, FAILED, "no file could be stored", None)
                log.error("%s: nothing stored, no commitment requested", tx.label)
                continue
            assoc = reuse if reuse is not None and reuse.is_open else self._open([])
            reuse = None
            crash_point("scu.send.after_pending")
            request = CommitmentRequest(tx.transaction_uid, references)
            status = assoc.n_action(request)
            self._after_n_action(tx, len(references), status)
            same_deadline = min(time.monotonic() + self.options.same_wait, self._deadline)
            waiting.append((assoc, tx.id, same_deadline))
            while len(waiting) >= MAX_WAITING_ASSOCIATIONS:
                self._release_after_wait(*waiting.popleft())
        if reuse is not None:
            reuse.release()
        while waiting:
            self._release_after_wait(*waiting.popleft())

    def _commitment_unsupported(self) -> None:
        error = (
            f"{self.archive} does not support Storage Commitment Push Model "
            f"({STORAGE_COMMITMENT_PUSH_MODEL}): presentation context rejected;"
            " files stored but not committed, none deleted"
        )
        for tx, _ in self.txs:
            self.journal.close_unrequested(tx.id, FAILED, error, None)
            log.error("%s: %s", tx.label, error)

    def _release_after_wait(self, assoc: net.Association, tx_id: int, deadline: float) -> None:
        """Keep an association open for a report on it until its transaction is settled or
        the same-association wait is over."""
        self.handler.wait_settled([tx_id], deadline, lambda: not assoc.is_open)
        self.handler.wait_answered(assoc)
        assoc.release()

    def _after_n_action(self, tx: Transaction, n_refs: int, status: int | None) -> None:
        if status is None:
            error = "no N-ACTION response: outcome unknown, a report is still awaited"
            self.journal.set_error(tx.id, error)
            log.warning("%s: %s", tx.label, error)
        elif not net.is_success(status):
            error = f"N-ACTION refused: {describe_status(status)}"
            self.journal.close_unrequested(tx.id, FAILED, error, status)
            log.error("%s: %s", tx.label, error)
        else:
            log.info(
                "%s: commitment of %d instances requested from %s", tx.label, n_refs, self.archive
            )

    def _abort_unrequested(self) -> None:
        """Transactions never requested (the connection was lost) end as aborted: no report
        will come for them."""
        for tx, _ in self.txs:
            if self.journal.get(tx.id).state == STORING:
                self.journal.close_unrequested(
                    tx.id, ABORTED, "interrupted before commitment was requested", None
                )
                log.error("%s: aborted before commitment was requested", tx.label)

    def _result(self, skipped: list[Skipped]) -> SendResult:
        results = [transaction_result(self.journal, self.journal.get(tx.id)) for tx, _ in self.txs]
        for tx in results:
            if tx.state == PENDING:
                log.warning(
                    "transaction %s: no report within %.0f s; still pending in the journal"
                    " (stgcmt agent can receive it later)",
                    tx.transaction_uid,
                    self.options.timeout,
                )
        return SendResult(str(self.journal.path), results, skipped)


def _c_store(assoc: net.Association, path: Path) -> tuple[int | None, str | None]:
    """(status, local error): a file that cannot be read is a local failure, not a lost
    response."""
    try:
        return assoc.c_store(path), None
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"


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
