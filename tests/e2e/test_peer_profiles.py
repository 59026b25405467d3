"""Per-peer profiles on the SCP: each option changes what goes on the wire (the A-ASSOCIATE-RQ
a report association sends) or who may associate. Real sockets only."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from stgcmt.config import PeerProfile, RemoteAE
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL
from stgcmt.ul.pdu import A_ASSOCIATE_RJ, A_ASSOCIATE_RQ

from support.common import LOCALHOST, wait_for
from support.engine import RawPeer
from support.pynetdicom_peer import Modality, refs_of

REPORT_WAIT = 15


class CapturingPeer:
    """Listens for the SCP's report association, keeps its A-ASSOCIATE-RQ, rejects it."""

    def __init__(self) -> None:
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self.requests: list[A_ASSOCIATE_RQ] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._listener.settimeout(REPORT_WAIT)
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        peer = RawPeer(sock)
        rq = peer.receive()
        if isinstance(rq, A_ASSOCIATE_RQ):
            self.requests.append(rq)
        peer.send(A_ASSOCIATE_RJ(1, 1, 1).encode())
        peer.close()
        self._listener.close()

    def request(self) -> A_ASSOCIATE_RQ:
        assert wait_for(lambda: self.requests, timeout=REPORT_WAIT), "no report association"
        return self.requests[0]

    def commitment_syntaxes(self) -> tuple[str, ...]:
        (context,) = [
            cx
            for cx in self.request().presentation_contexts
            if cx.abstract_syntax == STORAGE_COMMITMENT_PUSH_MODEL
        ]
        return tuple(context.transfer_syntaxes)


def _request_report(scp, modality: Modality, instances) -> None:
    paths = instances(1)
    assert modality.store(scp.port, paths) == [0]
    assert modality.commit(scp.port, refs_of(paths), generate_uid()) == 0


def _peer(port: int, **profile) -> tuple[RemoteAE, ...]:
    return (RemoteAE("MODALITY", LOCALHOST, port, PeerProfile(**profile)),)


def test_report_association_proposes_implicit_vr_alone_by_default(scp_factory, instances):
    capture = CapturingPeer()
    scp = scp_factory(remotes=_peer(capture.port))
    _request_report(scp, Modality(), instances)
    assert capture.commitment_syntaxes() == (ImplicitVRLittleEndian,)
    roles = capture.request().user_information.role_selection
    assert [(r.scu_role, r.scp_role) for r in roles] == [(False, True)]


def test_profile_transfer_syntaxes_pin_explicit(scp_factory, instances):
    capture = CapturingPeer()
    scp = scp_factory(remotes=_peer(capture.port, transfer_syntaxes=("explicit",)))
    _request_report(scp, Modality(), instances)
    assert capture.commitment_syntaxes() == (ExplicitVRLittleEndian,)


def test_profile_max_pdu_is_in_the_request(scp_factory, instances):
    capture = CapturingPeer()
    scp = scp_factory(remotes=_peer(capture.port, max_pdu=32768), max_pdu=65536)
    _request_report(scp, Modality(), instances)
    assert capture.request().user_information.maximum_length == 32768


def test_peer_accepting_only_implicit_gets_its_report(scp_factory, instances):
    reports: list[int] = []
    done = threading.Event()

    def on_report(event):
        reports.append(event.request.EventTypeID)
        done.set()
        return 0x0000, None

    ae = AE("MODALITY")
    ae.add_supported_context(
        StorageCommitmentPushModel, [ImplicitVRLittleEndian], scu_role=True, scp_role=True
    )
    server = ae.start_server(
        (LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        scp = scp_factory(remotes=_peer(server.server_address[1]))
        _request_report(scp, Modality(), instances)
        assert done.wait(REPORT_WAIT)
        assert reports == [1]
    finally:
        server.shutdown()


def _associates_from(address: str, port: int) -> bool:
    ae = AE("MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOCALHOST, port, ae_title="STGCMT_SCP", bind_address=(address, 0))
    established = assoc.is_established
    if established:
        assoc.release()
    return established


@pytest.mark.parametrize(("extra", "admitted"), [((), False), (("127.0.0.2",), True)])
def test_extra_hosts_admit_another_address(scp_factory, extra, admitted):
    scp = scp_factory(remotes=_peer(104, extra_hosts=extra))
    assert _associates_from("127.0.0.2", scp.port) is admitted
    assert _associates_from(LOCALHOST, scp.port)


def test_profile_check_host_false_admits_any_address(scp_factory):
    scp = scp_factory(remotes=_peer(104, check_host=False))
    assert _associates_from("127.0.0.2", scp.port)


def test_profile_report_assoc_same_overrides_global_new(scp_factory, instances):
    modality = Modality()
    scp = scp_factory(remotes=_peer(1, report_assoc="same"), report_assoc="new")
    paths = instances(1)
    assert modality.store(scp.port, paths) == [0]
    status = modality.commit(scp.port, refs_of(paths), generate_uid(), wait_same=REPORT_WAIT)
    assert status == 0
    assert [how for _, _, how in modality.reports] == ["same"]


def test_profile_tls_false_overrides_global_tls(scp_factory, instances, tmp_path: Path):
    """tls = false: the report association is plain TCP although [tls] is set (the SCP's
    listener itself then takes only TLS, so the request comes from a TLS-less check)."""
    from stgcmt.config import TlsConfig

    profile = PeerProfile(tls=False)
    assert not profile.tls_over(TlsConfig(ca=tmp_path / "ca.pem")).enabled
    assert PeerProfile(tls_ca=tmp_path / "x.pem").tls_over(TlsConfig()).ca == tmp_path / "x.pem"
