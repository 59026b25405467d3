"""A plain pynetdicom modality used as the reference peer in the tests.

Deliberately written against pynetdicom directly (not our seam), so the tests check our SCP
against an independent implementation of the protocol.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from stgcmt.dicom.commitment import CommitmentRequest, Reference, build_action_information
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE

LOCALHOST = "127.0.0.1"
LOST_RESPONSES = 3
"""C-STORE responses pynetdicom may lose (see :meth:`Modality.store`) before a test fails."""
log = logging.getLogger("tests.pynetdicom_peer")


class Modality:
    """A pynetdicom SCU that stores, asks for commitment and listens for reports."""

    def __init__(self, aet: str = "MODALITY", called: str = "STGCMT_SCP") -> None:
        self.aet = aet
        self.called = called
        self.reports: list[tuple[int, Dataset, str]] = []
        self._received = threading.Condition()
        self._server = None
        self.lost_responses = 0

    def _on_report(self, event) -> tuple[int, None]:
        with self._received:
            how = "same" if event.assoc.is_requestor else "new"
            self.reports.append((event.request.EventTypeID, event.event_information, how))
            self._received.notify_all()
        return 0x0000, None

    def listen(self, port: int = 0) -> int:
        """Accept reports on new associations (the requester asks for the SCP role)."""
        ae = AE(self.aet)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            (LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def associate(self, port: int, sop_classes: list[str] = (), called: str | None = None):
        ae = AE(self.aet)
        ae.dimse_timeout = 30
        for sop_class in dict.fromkeys(sop_classes):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_requested_context(StorageCommitmentPushModel)
        return ae.associate(
            LOCALHOST,
            port,
            ae_title=called or self.called,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )

    def store(self, port: int, paths: list[Path]) -> list[int]:
        """The C-STORE statuses, in order. pynetdicom 3 loses a response now and then when the
        SCP answers within about a millisecond (its reactor thread, between its pause check and
        its queue read, takes the response as "an unexpected C-STORE message"; storescp meets it
        too): the association is then aborted after the DIMSE timeout and that data set is
        sent again on a new one (a duplicate, answered Success), at most
        :data:`LOST_RESPONSES` times."""
        datasets = [dcmread(p) for p in paths]
        statuses: list[int] = []
        while len(statuses) < len(datasets):
            assoc = self.associate(port, [ds.SOPClassUID for ds in datasets])
            assert assoc.is_established
            try:
                for ds in datasets[len(statuses) :]:
                    answer = assoc.send_c_store(ds)
                    if "Status" not in answer:
                        self._lost_response(ds)
                        break
                    statuses.append(int(answer.Status))
            finally:
                if assoc.is_established:
                    assoc.release()
        return statuses

    def _lost_response(self, ds: Dataset) -> None:
        self.lost_responses += 1
        log.warning("pynetdicom lost the C-STORE response of %s; sent again", ds.SOPInstanceUID)
        assert self.lost_responses <= LOST_RESPONSES, "pynetdicom lost too many responses"

    def commit(
        self,
        port: int,
        refs: list[Reference],
        transaction_uid: str,
        *,
        wait_same: float = 0,
        reports: int = 1,
    ) -> int:
        """Send an N-ACTION; with ``wait_same`` keep the association open up to that long for
        ``reports`` reports on it. Returns the N-ACTION status."""
        information = build_action_information(CommitmentRequest(transaction_uid, refs))
        return self.n_action(port, information, wait_same, reports=reports)

    def n_action(
        self,
        port: int,
        information: Dataset | None,
        wait_same: float = 0,
        *,
        action_type: int = 1,
        instance_uid: str = STORAGE_COMMITMENT_INSTANCE,
        reports: int = 1,
    ) -> int:
        expected = len(self.reports) + reports
        assoc = self.associate(port)
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_action(
                information, action_type, StorageCommitmentPushModel, instance_uid
            )
            if wait_same:
                self.wait_report(wait_same, count=expected)
            return int(status.Status)
        finally:
            assoc.release()

    def wait_report(self, timeout: float, count: int = 1) -> bool:
        with self._received:
            return self._received.wait_for(lambda: len(self.reports) >= count, timeout)


def refs_of(paths: list[Path]) -> list[Reference]:
    result = []
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        result.append(Reference(ds.SOPClassUID, ds.SOPInstanceUID))
    return result


def report_content(information: Dataset) -> tuple[set[str], dict[str, int]]:
    """(committed instance UIDs, {failed instance UID: Failure Reason})."""
    committed = {i.ReferencedSOPInstanceUID for i in information.get("ReferencedSOPSequence", [])}
    failed = {
        i.ReferencedSOPInstanceUID: int(i.FailureReason)
        for i in information.get("FailedSOPSequence", [])
    }
    return committed, failed
