"""The Storage Commitment SCU: send files, ask the archive to commit them, and release local
copies only for what the archive has committed.

:func:`send` stores files with C-STORE, requests commitment with N-ACTION and waits for the
N-EVENT-REPORT on the sending association, on its own listener, or through a journal shared with
a running :class:`~stgcmt.scu.agent.Agent`. Reports are handled by
:class:`~stgcmt.scu.reports.ReportHandler`, files acted on by :mod:`stgcmt.scu.files`, and the
outcome is a :class:`~stgcmt.scu.results.SendResult`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stgcmt import ul
from stgcmt.config import RemoteAE
from stgcmt.dicom.commitment import CommitmentRequest
from stgcmt.dicom.status import RESOURCE_LIMITATION, describe_status
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, new_transaction_uid
from stgcmt.faults import crash_point
from stgcmt.scu import negotiation
from stgcmt.scu.dicomfiles import LocalFile, Skipped, scan, split
from stgcmt.scu.negotiation import Offer
from stgcmt.scu.options import SendOptions, UsageError
from stgcmt.scu.reports import ReportHandler, report_server
from stgcmt.scu.results import (
    EXIT_COMMITTED,
    EXIT_FAILED,
    EXIT_PENDING,
    NO_COMMITMENT,
    SendResult,
    transaction_result,
)
from stgcmt.storage.scu_journal import (
    ABORTED,
    FAILED,
    PENDING,
    STORING,
    ScuJournal,
    Transaction,
)

__all__ = [
    "EXIT_COMMITTED",
    "EXIT_FAILED",
    "EXIT_PENDING",
    "ProgressCallback",
    "SendOptions",
    "SendResult",
    "StageCallback",
    "UsageError",
    "partial_result",
    "send",
]
"""What callers of :func:`send` need beside it (its options, result and exit statuses); the
rest of the SCU's public names are :mod:`stgcmt.scu`'s."""

log = logging.getLogger("stgcmt.scu")

ProgressCallback = Callable[[int, int], None]
"""Called after each C-STORE with (files done, files in total)."""
StageCallback = Callable[[str, int, int | None], None]
"""Called with (stage, done, total) as a run goes on: ``("scanning", 0, None)`` while the
headers are read, ``("storing", n, N)`` after each C-STORE, ``("waiting", k, T)`` while
reports are awaited (k of T transactions settled) and ``("done", k, T)`` at the end."""

NO_LISTENER_HINT = (
    "no report arrived on the sending association; this archive may report on a new"
    " association: use --listen PORT or run stgcmt agent"
)
ACTION_STALL = 5.0
"""How long ``send`` waits for another process's delete/move to make progress before it
stops counting on it (the actions stay due; the agent finishes them)."""
_PARTIAL = "stgcmt_send_result"


def partial_result(exc: BaseException) -> SendResult | None:
    """The journal's state of a run that stopped on ``exc`` (AssociationError, OSError), if
    transactions had been created: what was aborted, and why."""
    result = getattr(exc, _PARTIAL, None)
    return result if isinstance(result, SendResult) else None


def send(
    archive: RemoteAE,
    paths: Sequence[Path],
    journal: ScuJournal,
    options: SendOptions | None = None,
    progress: ProgressCallback | None = None,
    stage: StageCallback | None = None,
) -> SendResult:
    """Send files and wait (bounded) for their commitment. Raises :class:`UsageError` for
    unusable options or no DICOM files, :class:`ul.AssociationError` or ``OSError`` when the
    archive cannot be reached or our listener cannot start (nothing is then deleted)."""
    options = (options or SendOptions()).checked()
    if stage:
        stage("scanning", 0, None)
    found = scan(paths)
    if not found.files:
        raise UsageError(f"no DICOM files found in {', '.join(map(str, paths))}")
    groups = split(found.files, options.group_by, options.max_refs)
    return _Sender(archive, journal, options, progress, stage).run(groups, found.skipped)


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
        stage: StageCallback | None = None,
    ) -> None:
        self.archive = archive
        self.journal = journal
        self.options = options
        self.progress = progress
        self.stage = stage
        self.handler = ReportHandler(journal, options.aet, options.reporters)
        self.txs: list[tuple[Transaction, list[LocalFile]]] = []
        self._opened: list[ul.Association] = []
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
                    self.options.max_pdu,
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
            except (ul.AssociationError, OSError) as exc:
                self._abort_unrequested(f": {exc}")
                partial = self._result(skipped)
                partial.error = f"{exc}; no local file was deleted"
                setattr(exc, _PARTIAL, partial)
                raise
            finally:
                self._abort_unrequested()
            self._wait_reports(self._ids(), self._deadline, lambda: False)
            self._wait_actions()
        return self._result(skipped)

    def _wait_reports(self, tx_ids: list[int], deadline: float, stop: Callable[[], bool]) -> bool:
        """:meth:`ReportHandler.wait_settled` in short steps, telling ``stage`` how many of
        the run's transactions are settled."""
        while True:
            step = min(deadline, time.monotonic() + 0.5)
            settled = self.handler.wait_settled(tx_ids, step, stop)
            if self.stage:
                self.stage("waiting", self._settled(), len(self.txs))
            if settled or time.monotonic() >= deadline or stop():
                return settled

    def _settled(self) -> int:
        return sum(self.journal.get(tx.id).state not in (STORING, PENDING) for tx, _ in self.txs)

    def _wait_actions(self) -> None:
        """A report another process (the agent) claimed has its delete/move done by that
        process, after the transaction left ``pending``: wait while it makes progress, so the
        result counts what it did."""
        last, since = -1, time.monotonic()
        while True:
            due = sum(len(self.journal.due_actions(tx.id)) for tx, _ in self.txs)
            if not due:
                return
            if due != last:
                last, since = due, time.monotonic()
            elif time.monotonic() - since > ACTION_STALL:
                log.warning("%d delete/move actions still due (stgcmt agent finishes them)", due)
                return
            time.sleep(0.05)

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

    def _open(self, contexts: Sequence[Offer]) -> ul.Association:
        via = "new" if self.options.report_assoc == "new" else "same"
        handlers = self.handler.handlers(via) if via == "same" else None
        profile = self.archive.profile
        assoc = ul.open_association(
            self.options.aet,
            self.archive,
            # A storage association survives an archive without Storage Commitment: the files
            # are stored, and the commitment step then fails for them (nothing is deleted).
            ul.ContextPlan(
                storage=contexts,
                commitment="scu",
                require_commitment=not contexts,
                commitment_syntaxes=profile.transfer_syntaxes,
            ),
            handlers=handlers,
            # The archive's profile (--config [[archive]]) over the run's settings.
            timeouts=profile.timeouts.over(self.options.timeouts),
            tls=profile.tls_over(self.options.tls),
            **({"max_pdu": profile.max_pdu} if profile.max_pdu else {}),
        )
        self._opened.append(assoc)
        return assoc

    def _store_and_request(self) -> None:
        """Store everything, then request commitment: the last storage association carries
        every N-ACTION (see :meth:`_request_all`)."""
        try:
            self._request_all(self._store_all())
        finally:
            for assoc in self._opened:
                if assoc.is_open:
                    assoc.abort()

    def _store_all(self) -> ul.Association:
        work = [(tx, seq, f) for tx, files in self.txs for seq, f in enumerate(files)]
        plans = negotiation.plan_associations((f for _, _, f in work), self.options.propose)
        done = 0
        for n, contexts in enumerate(plans):
            assoc = self._open(contexts)
            wanted = {sop_class for sop_class, _ in contexts}
            for item in work:
                if item[2].sop_class_uid in wanted:
                    assoc = self._store(assoc, contexts, item)
                    done += 1
                    if self.progress:
                        self.progress(done, len(work))
                    if self.stage:
                        self.stage("storing", done, len(work))
            if n < len(plans) - 1:
                assoc.release()
        return assoc

    def _store(
        self, assoc: ul.Association, contexts: Sequence[Offer], item: _Work
    ) -> ul.Association:
        """C-STORE one file, in its own transfer syntax if the archive accepted it, else
        transcoded to an accepted uncompressed one; without a response (outcome unknown)
        re-send it once on a new association. Returns the association to continue on."""
        tx, seq, f = item
        syntax, refused = negotiation.choose(assoc, f, self.options.propose, self.archive)
        if refused:
            return self._store_failed(assoc, contexts, item, None, refused)
        status, error = _c_store(assoc, f, syntax)
        if status is None and error is None:
            log.warning("no response to C-STORE of %s: re-sending on a new association", f.path)
            assoc = self._reopen(assoc, contexts)
            syntax, refused = negotiation.choose(assoc, f, self.options.propose, self.archive)
            if refused:
                return self._store_failed(assoc, contexts, item, None, refused)
            status, error = _c_store(assoc, f, syntax)
        if status is None or not ul.is_success(status):
            error = error or describe_status(status)
            return self._store_failed(assoc, contexts, item, status, error)
        self.journal.record_store(tx.id, seq, status, True)
        log.debug("C-STORE %s: %s", f.path, describe_status(status))
        return assoc

    def _store_failed(
        self,
        assoc: ul.Association,
        contexts: Sequence[Offer],
        item: _Work,
        status: int | None,
        error: str,
    ) -> ul.Association:
        tx, seq, f = item
        self.journal.record_store(tx.id, seq, status, False, error)
        log.warning("C-STORE of %s failed: %s; the file is kept", f.path, error)
        return assoc if assoc.is_open else self._reopen(assoc, contexts)

    def _reopen(self, assoc: ul.Association, contexts: Sequence[Offer]) -> ul.Association:
        if assoc.is_open:
            assoc.abort()
        return self._open(contexts)

    def _request_all(self, first: ul.Association) -> None:
        """Every N-ACTION of the run on one association, the last storage association (a new
        one only if it was lost), one after another: we negotiate no asynchronous operations,
        so each waits for its response. Reports for any of them may arrive in between on the
        same association; the engine answers them meanwhile. The association then stays open
        for the same-association wait, counted from the last N-ACTION."""
        if not first.accepts_commitment:
            self._commitment_unsupported()
            return
        self._deadline = time.monotonic() + self.options.timeout
        assoc = first
        requested: list[tuple[ul.Association, list[int]]] = [(first, [])]
        for tx, _ in self.txs:
            crash_point("scu.send.after_store")
            references = self.journal.mark_requested(tx.id)
            if not references:
                self.journal.close_unrequested(tx.id, FAILED, "no file could be stored", None)
                log.error("%s: nothing stored, no commitment requested", tx.label)
                continue
            if not assoc.is_open:
                assoc = self._open([])
                requested.append((assoc, []))
            crash_point("scu.send.after_pending")
            request = CommitmentRequest(tx.transaction_uid, references)
            status = assoc.n_action(request)
            self._after_n_action(tx, len(references), status)
            requested[-1][1].append(tx.id)
        same_deadline = min(time.monotonic() + self.options.same_wait, self._deadline)
        for opened, tx_ids in requested:
            if opened.is_open:
                self._release_after_wait(opened, tx_ids, same_deadline)

    def _commitment_unsupported(self) -> None:
        error = (
            f"{NO_COMMITMENT}: {self.archive} rejected the Storage Commitment Push Model"
            f" ({STORAGE_COMMITMENT_PUSH_MODEL}) presentation context;"
            " files stored but not committed, none deleted"
        )
        for tx, _ in self.txs:
            self.journal.close_unrequested(tx.id, FAILED, error, None)
            log.error("%s: %s", tx.label, error)

    def _release_after_wait(
        self, assoc: ul.Association, tx_ids: list[int], deadline: float
    ) -> None:
        """Keep an association open for a report on it until its transactions are settled or
        the same-association wait is over."""
        self._wait_reports(tx_ids, deadline, lambda: not assoc.is_open)
        self.handler.wait_answered(assoc)
        assoc.release()

    def _after_n_action(self, tx: Transaction, n_refs: int, status: int | None) -> None:
        if status is None:
            error = "no N-ACTION response: outcome unknown, a report is still awaited"
            self.journal.set_error(tx.id, error)
            log.warning("%s: %s", tx.label, error)
        elif not ul.is_success(status):
            error = f"N-ACTION refused: {describe_status(status)}"
            if status == RESOURCE_LIMITATION and n_refs > 1:
                error += (
                    f"; the archive may limit the references per N-ACTION ({n_refs} asked):"
                    f" send again with --max-refs N, e.g. --max-refs {max(1, n_refs // 2)}"
                )
            self.journal.close_unrequested(tx.id, FAILED, error, status)
            log.error("%s: %s", tx.label, error)
        else:
            log.info(
                "%s: commitment of %d instances requested from %s", tx.label, n_refs, self.archive
            )

    def _abort_unrequested(self, why: str = "") -> None:
        """Transactions never requested (the connection was lost) end as aborted, their files
        too: no report will come for them."""
        for tx, _ in self.txs:
            if self.journal.get(tx.id).state == STORING:
                self.journal.close_unrequested(
                    tx.id, ABORTED, f"interrupted before commitment was requested{why}", None
                )
                log.error("%s: aborted before commitment was requested%s", tx.label, why)

    def _result(self, skipped: list[Skipped]) -> SendResult:
        results = [transaction_result(self.journal, self.journal.get(tx.id)) for tx, _ in self.txs]
        pending = [tx for tx in results if tx.state == PENDING]
        for tx in pending:
            log.warning(
                "transaction %s: no report within %.0f s; still pending in the journal"
                " (stgcmt agent can receive it later)",
                tx.transaction_uid,
                self.options.timeout,
            )
        notes = []
        if pending and self.options.listen_port is None:
            notes.append(NO_LISTENER_HINT)
            log.warning("%s", NO_LISTENER_HINT)
        if self.stage:
            self.stage("done", self._settled(), len(self.txs))
        return SendResult(str(self.journal.path), results, skipped, notes)


def _c_store(assoc: ul.Association, f: LocalFile, syntax: str) -> tuple[int | None, str | None]:
    """(status, local error): a file that cannot be read or transcoded is a local failure, not
    a lost response."""
    try:
        if syntax == f.transfer_syntax:
            return assoc.c_store(f.path), None
        return assoc.c_store(f.path, syntax), None
    except OSError as exc:
        return None, f"cannot read the file: {exc.strerror or exc}"
    except ValueError as exc:
        return None, (
            f"cannot transcode {negotiation.syntax_name(f.transfer_syntax)} to"
            f" {negotiation.syntax_name(syntax)}: {exc}"
        )
