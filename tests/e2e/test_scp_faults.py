"""Report targets that are slow or abort mid-exchange: retried with backoff, delivered later."""

from __future__ import annotations

import threading
import time

from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from stgcmt.config import Timeouts

from support.common import LOCALHOST, remote
from support.pynetdicom_peer import Modality, refs_of


class FlakyListener:
    """Receives reports; misbehaves (``slow`` or ``abort``) on the first ``bad`` attempts."""

    def __init__(self, behaviour: str, bad: int) -> None:
        self.behaviour = behaviour
        self.bad = bad
        self.attempts = 0
        self.accepted: list[str] = []
        self.done = threading.Event()
        ae = AE("MODALITY")
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            (LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)]
        )
        self.port = self._server.server_address[1]

    def _on_report(self, event):
        self.attempts += 1
        if self.attempts <= self.bad:
            if self.behaviour == "abort":
                event.assoc.abort()
                return 0x0110, None
            time.sleep(2.5)  # longer than the SCP's DIMSE timeout
        self.accepted.append(event.event_information.TransactionUID)
        self.done.set()
        return 0x0000, None

    def stop(self) -> None:
        self._server.shutdown()


def _run(scp_factory, instances, behaviour: str, transaction_uid: str):
    listener = FlakyListener(behaviour, bad=2)
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", listener.port),),
            timeouts=Timeouts(dimse=1.0, acse=5.0, network=30.0, connect=5.0),
        )
        modality = Modality("MODALITY")
        paths = instances(1)
        modality.store(scp.port, paths)
        assert modality.commit(scp.port, refs_of(paths), transaction_uid) == 0
        assert listener.done.wait(30)
        tx = scp.wait_delivered(transaction_uid, 10)
        assert tx is not None and tx.state == "delivered"
        assert tx.attempts == 3  # two failed attempts, then the delivery
        return listener
    finally:
        listener.stop()


def test_report_target_aborting_mid_exchange_is_retried(scp_factory, instances):
    listener = _run(scp_factory, instances, "abort", "1.2.3.600")
    assert listener.accepted == ["1.2.3.600"]


def test_slow_report_target_is_retried(scp_factory, instances):
    listener = _run(scp_factory, instances, "slow", "1.2.3.601")
    # A report whose response never came may have been processed: the SCU sees a repeat.
    assert set(listener.accepted) == {"1.2.3.601"}
