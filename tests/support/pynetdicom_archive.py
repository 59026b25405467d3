"""A plain pynetdicom archive (Storage + Storage Commitment SCP) used as a peer for the SCU.

Deliberately written against pynetdicom directly (not our seam), and scriptable where our own
SCP would never misbehave: it can claim instances it "lost", report an unknown Transaction UID,
never report, or stall a C-STORE response so the sender sees no answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from stgcmt.dicom.commitment import (
    CommitmentReport,
    FailedReference,
    Reference,
    build_event_information,
)
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE

LOCALHOST = "127.0.0.1"
STORAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2")


@dataclass
class Archive:
    """``report``: 'same' (on the requesting association), 'new' (to ``report_to``, asking
    for the SCP role unless ``role_item`` is False) or 'never'."""

    aet: str = "ARCHIVE"
    report: str = "same"
    report_to: tuple[str, int] | None = None
    role_item: bool = True
    lose: set[str] = field(default_factory=set)
    """SOP Instance UIDs answered C-STORE success but reported failed (0112H)."""
    stall_once: set[str] = field(default_factory=set)
    """SOP Instance UIDs whose first C-STORE response is delayed by ``stall`` seconds."""
    stall: float = 0.0
    transaction_uid: str | None = None
    """Report this Transaction UID instead of the requested one."""
    report_delay: float = 0.05
    stored: list[str] = field(default_factory=list)
    requests: list[Dataset] = field(default_factory=list)
    answers: list[int | None] = field(default_factory=list)
    """Our SCU's status answers to the N-EVENT-REPORTs."""
    transfer_syntaxes: tuple[str, ...] = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    """What the storage contexts accept (e.g. only Implicit VR Little Endian)."""
    keep_datasets: bool = False
    """Keep every received data set (decoded) in ``datasets`` and its syntax in ``syntaxes``."""
    datasets: dict[str, Dataset] = field(default_factory=dict)
    syntaxes: dict[str, str] = field(default_factory=dict)
    proposed: list[list[tuple[str, tuple[str, ...]]]] = field(default_factory=list)
    """Per association requested: the proposed (abstract syntax, transfer syntaxes)."""

    def __post_init__(self) -> None:
        self._server = None
        self._threads: list[threading.Thread] = []
        self._answered = threading.Condition()

    def start(self) -> int:
        ae = AE(self.aet)
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid, list(self.transfer_syntaxes))
        ae.add_supported_context(StorageCommitmentPushModel)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_N_ACTION, self._on_action),
            (evt.EVT_REQUESTED, self._on_requested),
        ]
        self._server = ae.start_server((LOCALHOST, 0), block=False, evt_handlers=handlers)
        return self._server.server_address[1]

    def stop(self) -> None:
        for thread in self._threads:
            thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def wait_answers(self, count: int, timeout: float = 10) -> list[int | None]:
        with self._answered:
            self._answered.wait_for(lambda: len(self.answers) >= count, timeout)
        return self.answers

    def _on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.stall_once:
            self.stall_once.discard(uid)
            time.sleep(self.stall)
        if self.keep_datasets:
            self.datasets[uid] = event.dataset
            self.syntaxes[uid] = str(event.context.transfer_syntax)
        self.stored.append(uid)
        return 0x0000

    def _on_requested(self, event) -> None:
        contexts = event.assoc.requestor.requested_contexts
        self.proposed.append(
            [(str(cx.abstract_syntax), tuple(map(str, cx.transfer_syntax))) for cx in contexts]
        )

    def _on_action(self, event) -> tuple[int, None]:
        request = event.action_information
        self.requests.append(request)
        if self.report != "never":
            thread = threading.Thread(target=self._send_report, args=(event.assoc, request))
            self._threads.append(thread)
            thread.start()
        return 0x0000, None

    def _report_for(self, request: Dataset) -> CommitmentReport:
        report = CommitmentReport(self.transaction_uid or request.TransactionUID)
        for item in request.ReferencedSOPSequence:
            ref = Reference(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID)
            if ref.sop_instance_uid in self.lose or ref.sop_instance_uid not in self.stored:
                report.failed.append(
                    FailedReference(
                        item.ReferencedSOPClassUID, ref.sop_instance_uid, NO_SUCH_OBJECT_INSTANCE
                    )
                )
            else:
                report.committed.append(ref)
        return report

    def _send_report(self, requesting, request: Dataset) -> None:
        time.sleep(self.report_delay)
        report = self._report_for(request)
        if self.report == "same":
            status = self._deliver(requesting, report)
        else:
            status = self.deliver_on_new_association(report)
        with self._answered:
            self.answers.append(status)
            self._answered.notify_all()

    def deliver_on_new_association(self, report: CommitmentReport) -> int | None:
        assert self.report_to is not None
        ae = AE(self.aet)
        ae.add_requested_context(StorageCommitmentPushModel)
        roles = [build_role(StorageCommitmentPushModel, scp_role=True)] if self.role_item else []
        assoc = ae.associate(
            LOCALHOST, self.report_to[1], ae_title=self.report_to[0], ext_neg=roles or None
        )
        if not assoc.is_established:
            return None
        try:
            return self._deliver(assoc, report)
        finally:
            assoc.release()

    @staticmethod
    def _deliver(assoc, report: CommitmentReport) -> int | None:
        status, _ = assoc.send_n_event_report(
            build_event_information(report),
            report.event_type_id,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
        return int(status.Status) if "Status" in status else None
