"""N-ACTION (request commitment): validate the request, journal it durably before answering
(the journal is the promise), and hold its report back until the response has left."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from stgcmt import ul
from stgcmt.config import ScpConfig
from stgcmt.dicom.commitment import (
    ACTION_TYPE_REQUEST_COMMITMENT,
    CommitmentRequest,
    InvalidRequest,
)
from stgcmt.dicom.status import (
    DUPLICATE_TRANSACTION_UID,
    INVALID_OBJECT_INSTANCE,
    NO_SUCH_ACTION_TYPE,
    NO_SUCH_SOP_CLASS,
    PROCESSING_FAILURE,
    SUCCESS,
    describe_status,
)
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH_MODEL
from stgcmt.events import CommitmentRequested, Events, Peer
from stgcmt.faults import crash_point
from stgcmt.scp.requesters import Requesters
from stgcmt.storage.instances import shown
from stgcmt.storage.interfaces import ScpJournal

log = logging.getLogger("stgcmt.scp")


@dataclass
class _Answer:
    """What an N-ACTION asked, as far as it could be read (for its event)."""

    transaction_uid: str = ""
    references: int = 0


class NAction:
    """The SCP's N-ACTION handler. ``journal_ok`` is called after each journal write that
    succeeded (storage is back, if it was failing)."""

    def __init__(
        self,
        config: ScpConfig,
        journal: ScpJournal,
        requesters: Requesters,
        journal_ok: Callable[[], None],
        events: Events | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.requesters = requesters
        self._journal_ok = journal_ok
        self.events = events or Events()

    def on_n_action(self, link: ul.Link, request: ul.ActionRequest) -> tuple[int, None]:
        """Every outcome, even an unexpected exception, is an N-ACTION status, a log line and
        a :class:`CommitmentRequested` event."""
        answered = _Answer()
        try:
            status = self._n_action(link, request, answered)
        except Exception:
            log.exception(
                "N-ACTION from %s failed (%s)", link.peer, describe_status(PROCESSING_FAILURE)
            )
            status = PROCESSING_FAILURE
        self.events.emit(
            CommitmentRequested(
                Peer.of(link.peer), status, answered.transaction_uid, answered.references
            )
        )
        return status, None

    def _n_action(self, link: ul.Link, request: ul.ActionRequest, answered: _Answer) -> int:
        peer = link.peer
        try:
            commitment = self._validate(request)
        except InvalidRequest as exc:
            log.error(
                "N-ACTION from %s refused with %s: %s", peer, describe_status(exc.status), exc
            )
            return exc.status
        answered.transaction_uid = commitment.transaction_uid
        answered.references = len(commitment.references)
        mode = (
            self.config.report_route(peer.calling_aet)
            if self.config.remote(peer.calling_aet)
            else "same"
        )
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
            return PROCESSING_FAILURE
        self._journal_ok()
        crash_point("scp.n_action.after_journal")
        self.requesters.journaled(link, tx.id)
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
        return SUCCESS

    def _validate(self, request: ul.ActionRequest) -> CommitmentRequest:
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
