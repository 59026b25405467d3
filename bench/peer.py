"""The reference peer for commitment latency: an N-ACTION sender and an N-EVENT-REPORT
listener written with pynetdicom directly.

It deliberately does not use stgcmt's networking seam: the engine under test (our asyncio
engine, in the SCP process) must not also be the stopwatch. The clock starts
when pynetdicom has encoded the N-ACTION and hands it to the wire (EVT_DIMSE_SENT; building
and encoding 100,000 references in pydicom is the client's cost, not the SCP's) and stops when
the report has been reassembled at the listener, before it is decoded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from .dicomdata import Ref
from .procs import LOCALHOST, BenchError

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


@dataclass
class _Arrival:
    received_at: float
    event_type_id: int
    raw: bytes
    transfer_syntax: str


@dataclass(frozen=True)
class Report:
    """What came back for one request, decoded after the clock stopped."""

    latency_s: float
    received_at: float
    """perf_counter() when the report had arrived."""
    sent_wall: float
    """time.time() when the N-ACTION went out, to line up with the SCP's log timestamps."""
    event_type_id: int
    committed: int
    failed: int


def action_information(transaction_uid: str, refs: list[Ref]) -> Dataset:
    """Action Information of a Request Storage Commitment (PS3.4 J.3.2)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def _decode(arrival: _Arrival) -> Dataset:
    implicit = arrival.transfer_syntax == IMPLICIT_VR_LE
    little = arrival.transfer_syntax != BIG_ENDIAN
    return read_dataset(BytesIO(arrival.raw), implicit, little)


class ReferencePeer:
    """One AE title that requests commitment and listens for reports on new associations
    (the SCP may propose the SCP role for itself, as IHE RAD-10 asks)."""

    def __init__(self, aet: str, timeout: float = 600.0) -> None:
        self.aet = aet
        self.timeout = timeout
        self._arrivals: list[_Arrival] = []
        self._cond = threading.Condition()
        self._server: Any = None
        self.port = 0

    def _ae(self) -> AE:
        ae = AE(self.aet)
        ae.maximum_pdu_size = 0  # no limit: the sender picks its PDU size, we never throttle it
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = 10
        return ae

    def start(self) -> ReferencePeer:
        ae = self._ae()
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            (LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_report(self, event: Any) -> tuple[int, None]:
        received_at = time.perf_counter()
        info = event.request.EventInformation
        arrival = _Arrival(
            received_at,
            int(event.request.EventTypeID or 0),
            info.getvalue() if info is not None else b"",
            str(event.context.transfer_syntax),
        )
        with self._cond:
            self._arrivals.append(arrival)
            self._cond.notify_all()
        return 0x0000, None

    def request(self, port: int, called_aet: str, transaction_uid: str, refs: list[Ref]) -> Report:
        """Send one N-ACTION on a fresh association, release it, and wait for its report."""
        information = action_information(transaction_uid, refs)
        seen = len(self._arrivals)
        sent_at = self._send_n_action(port, called_aet, information)
        return self._wait_report(transaction_uid, sent_at, seen)

    def _send_n_action(
        self, port: int, called_aet: str, information: Dataset
    ) -> tuple[float, float]:
        """(perf_counter, time.time) when the N-ACTION was handed to the wire."""
        sent: list[tuple[float, float]] = []

        def on_sent(event: Any) -> None:
            if type(event.message).__name__ == "N_ACTION_RQ" and not sent:
                sent.append((time.perf_counter(), time.time()))

        ae = self._ae()
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(
            LOCALHOST, port, ae_title=called_aet, evt_handlers=[(evt.EVT_DIMSE_SENT, on_sent)]
        )
        if not assoc.is_established:
            raise BenchError(f"association for N-ACTION to {called_aet}:{port} failed")
        try:
            status, _ = assoc.send_n_action(
                information, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
        finally:
            assoc.release()
        if status is None or int(status.Status) != 0 or not sent:
            raise BenchError(f"N-ACTION to {called_aet} failed: status {status}")
        return sent[0]

    def _wait_report(self, transaction_uid: str, sent_at: tuple[float, float], seen: int) -> Report:
        deadline = time.monotonic() + self.timeout
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda n=seen: len(self._arrivals) > n, max(0.0, deadline - time.monotonic())
                )
                fresh = self._arrivals[seen:]
                seen = len(self._arrivals)
            for arrival in fresh:
                ds = _decode(arrival)
                if str(ds.get("TransactionUID", "")) == transaction_uid:
                    return Report(
                        arrival.received_at - sent_at[0],
                        arrival.received_at,
                        sent_at[1],
                        arrival.event_type_id,
                        len(ds.get("ReferencedSOPSequence", [])),
                        len(ds.get("FailedSOPSequence", [])),
                    )
            if time.monotonic() >= deadline:
                raise BenchError(f"no report for {transaction_uid} within {self.timeout:.0f} s")
