"""The upper layer state machine over real TCP on 127.0.0.1: engine against engine, and against
raw-socket peers that misbehave on purpose (malformed PDUs, silence, release collisions)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from stgcmt import ul as api
from stgcmt.config import Timeouts, TlsConfig
from stgcmt.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.ul.acse import propose, user_information
from stgcmt.ul.association import State
from stgcmt.ul.dimse import (
    AFFECTED_SOP_CLASS_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    MESSAGE_ID,
    NO_DATA_SET,
    STATUS,
    CommandField,
    MessageAssembler,
    encode_command_set,
    fragments,
)
from stgcmt.ul.engine import run
from stgcmt.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from stgcmt.ul.pdu_items import RoleSelectionItem
from stgcmt.ul.seam import (
    NON_STORAGE_SYNTAXES,
    ActionRequest,
    AssociationError,
    ContextPlan,
    EventReport,
    Handlers,
    Rejection,
    StoreRequest,
)

from support.common import (
    LOCALHOST,
    SECONDARY_CAPTURE,
    free_port,
    remote,
    wait_for,
    write_instances,
)
from support.engine import FAST, RawAcceptor, RawPeer, data_set_of, information
from support.tls_certs import CertificateAuthority

STORE_PLAN = ContextPlan(storage=[(SECONDARY_CAPTURE, ExplicitVRLittleEndian)], echo=True)


def echo_rq(context_id: int = 1, message_id: int = 1) -> bytes:
    command = {
        AFFECTED_SOP_CLASS_UID: VERIFICATION,
        COMMAND_FIELD: CommandField.C_ECHO_RQ,
        MESSAGE_ID: message_id,
        COMMAND_DATA_SET_TYPE: NO_DATA_SET,
    }
    return b"".join(fragments(context_id, encode_command_set(command), (), 0))


def raw_associate(port: int, roles=()) -> tuple[RawPeer, A_ASSOCIATE_AC]:
    """Associate by hand, proposing Verification (context 1) and Storage Commitment (3)."""
    peer = RawPeer.connect(port)
    contexts = propose(
        [(VERIFICATION, NON_STORAGE_SYNTAXES)]
        + [(STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES)]
    )
    peer.send(A_ASSOCIATE_RQ("ENGINE", "RAW", contexts, user_information(0, roles)).encode())
    ac = peer.receive()
    assert isinstance(ac, A_ASSOCIATE_AC)
    return peer, ac


def messages_of(pdus) -> list:
    assembler, found = MessageAssembler(), []
    for pdu in pdus:
        for pdv in pdu.items:
            message = assembler.feed(pdv)
            if message is not None:
                found.append(message)
    return found


# -- engine against engine -----------------------------------------------------------------------


def test_store_commit_and_reports_both_ways(engine_server, tmp_path: Path) -> None:
    stored: list[StoreRequest] = []
    actions: list[ActionRequest] = []
    reports: list[EventReport] = []
    answered = threading.Event()
    links = []

    def on_n_action(link, request):
        actions.append(request)
        links.append(link)
        return 0, None

    server = engine_server(
        Handlers(
            c_store=lambda request: stored.append(request) or 0,
            n_action=on_n_action,
            n_action_answered=lambda link: answered.set(),
            n_event_report=lambda link, report: reports.append(report) or 0,
        ),
        storage=True,
    )
    paths = write_instances(tmp_path / "out", 2)
    plan = ContextPlan(storage=STORE_PLAN.storage, commitment="scu", echo=True)
    requester_reports: list[EventReport] = []
    handlers = Handlers(n_event_report=lambda link, report: requester_reports.append(report) or 0)

    with api.open_association("SCU", remote("ENGINE", server.port), plan, handlers=handlers) as a:
        assert a.c_echo() == 0
        assert [a.c_store(p) for p in paths] == [0, 0]
        assert a.n_action(information("1.2.3.77")) == 0
        assert answered.wait(5)
        # same-association delivery, from another thread, as the SCP does it
        assert links[0].n_event_report(1, information("1.2.3.77")) == 0

    assert [r.dataset for r in stored] == [data_set_of(p) for p in paths]
    assert {r.transfer_syntax for r in stored} == {ExplicitVRLittleEndian}
    assert actions[0].commitment(10).transaction_uid == "1.2.3.77"
    assert actions[0].action_type_id == 1
    assert requester_reports[0].event_type_id == 1
    assert requester_reports[0].report().transaction_uid == "1.2.3.77"

    # and a report from an association we open as SCP of the Push Model
    with api.open_association(
        "SCU", remote("ENGINE", server.port), ContextPlan(commitment="scp")
    ) as a:
        assert a.n_event_report(2, information("1.2.3.78")) == 0
    assert reports[0].event_type_id == 2 and reports[0].report().transaction_uid == "1.2.3.78"


def test_small_max_pdu_both_ways(engine_server, tmp_path: Path) -> None:
    stored: list[bytes] = []
    server = engine_server(
        Handlers(c_store=lambda r: stored.append(r.dataset) or 0), storage=True, max_pdu=1024
    )
    [path] = write_instances(tmp_path / "out", 1, pixel_bytes=300_000)
    with api.open_association("SCU", remote("ENGINE", server.port), STORE_PLAN, max_pdu=512) as a:
        assert a.c_store(path) == 0
    assert stored == [data_set_of(path)]


def test_c_store_fragments_to_the_peers_max_length(tmp_path: Path) -> None:
    [path] = write_instances(tmp_path / "out", 1, pixel_bytes=5_000)
    received: list[P_DATA_TF] = []

    def store_scp(peer: RawPeer) -> None:
        while not (
            received and received[-1].items[-1].is_last and not received[-1].items[-1].is_command
        ):
            pdu = peer.receive()
            assert isinstance(pdu, P_DATA_TF)
            received.append(pdu)
        [request] = messages_of(received)
        response = {
            COMMAND_FIELD: 0x8001,
            0x0120: request.command[MESSAGE_ID],
            0x0800: NO_DATA_SET,
            STATUS: 0,
        }
        peer.send(b"".join(fragments(1, encode_command_set(response), (), 0)))
        assert isinstance(peer.receive(), A_RELEASE_RQ)
        peer.send(A_RELEASE_RP().encode())

    acceptor = RawAcceptor({SECONDARY_CAPTURE: (ExplicitVRLittleEndian,)}, store_scp, max_pdu=256)
    with api.open_association("SCU", remote("RAW", acceptor.port), STORE_PLAN) as a:
        assert a.c_store(path) == 0
    acceptor.join()
    assert all(len(pdu.encode()) - 6 <= 256 for pdu in received)
    assert messages_of(received)[0].data_set == data_set_of(path)


def test_c_store_needs_the_files_exact_context(engine_server, tmp_path: Path, caplog) -> None:
    server = engine_server(Handlers(c_store=lambda r: 0), storage=True)
    [path] = write_instances(tmp_path / "out", 1)
    plan = ContextPlan(storage=[(SECONDARY_CAPTURE, ImplicitVRLittleEndian)])
    with api.open_association("SCU", remote("ENGINE", server.port), plan) as a:
        assert a.accepts(SECONDARY_CAPTURE, ImplicitVRLittleEndian)
        assert not a.accepts(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
        assert a.c_store(path) is None
    assert "no accepted presentation context" in caplog.text


def test_handler_failure_is_a_processing_failure(engine_server, tmp_path: Path) -> None:
    def broken(request):
        raise RuntimeError("disk on fire")

    server = engine_server(Handlers(c_store=broken), storage=True)
    [path] = write_instances(tmp_path / "out", 1)
    with api.open_association("SCU", remote("ENGINE", server.port), STORE_PLAN) as a:
        assert a.c_store(path) == 0x0110
        assert a.c_echo() == 0  # the association carries on


@pytest.mark.parametrize(
    "rejection, words",
    [
        (Rejection("calling-aet"), "rejected the association: calling AE title not recognised"),
        (Rejection("called-aet"), "rejected the association: called AE title not recognised"),
        (Rejection("no-reason", transient=True), "rejected the association (transient): no reason"),
        (Rejection("congestion"), "rejected the association (transient): local limit exceeded"),
    ],
)
def test_rejections(engine_server, rejection: Rejection, words: str) -> None:
    server = engine_server(Handlers(accept=lambda peer: rejection))
    with pytest.raises(AssociationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        api.open_association("SCU", remote("ENGINE", server.port), ContextPlan(echo=True))


def test_rejection_on_the_wire_and_peer_info(engine_server) -> None:
    seen = []
    server = engine_server(
        Handlers(accept=lambda peer: seen.append(peer) or Rejection("called-aet"))
    )
    peer = RawPeer.connect(server.port)
    contexts = propose([(VERIFICATION, NON_STORAGE_SYNTAXES)])
    peer.send(A_ASSOCIATE_RQ("WRONG", "RAW", contexts, user_information(0)).encode())
    assert peer.receive() == A_ASSOCIATE_RJ(1, 1, 7)
    assert peer.receive() is None  # and the acceptor closes
    assert (seen[0].calling_aet, seen[0].called_aet, seen[0].host) == ("RAW", "WRONG", LOCALHOST)


def test_association_limit_is_a_transient_rejection(engine_server) -> None:
    server = engine_server(max_associations=1)
    with api.open_association("SCU", remote("ENGINE", server.port), ContextPlan(echo=True)):
        assert server.active_associations == 1
        with pytest.raises(AssociationError, match="transient"):
            api.open_association("SCU", remote("ENGINE", server.port), ContextPlan(echo=True))


def test_nothing_accepted(engine_server) -> None:
    server = engine_server(commitment=False)
    target = remote("ENGINE", server.port)
    with pytest.raises(AssociationError, match="accepted none of the proposed"):
        api.open_association("SCU", target, ContextPlan(storage=STORE_PLAN.storage))
    with pytest.raises(AssociationError, match="does not support Storage Commitment"):
        api.open_association("SCU", target, ContextPlan(commitment="scu"))
    with pytest.raises(AssociationError, match="does not support Storage Commitment"):
        api.open_association("SCU", target, ContextPlan(commitment="scu", echo=True))
    optional = ContextPlan(commitment="scu", echo=True, require_commitment=False)
    with api.open_association("SCU", target, optional) as association:
        assert not association.accepts_commitment
        assert association.n_action(information()) is None  # no context: nothing sent


def test_cannot_connect() -> None:
    with pytest.raises(AssociationError, match="cannot connect"):
        api.open_association("SCU", remote("NOBODY", free_port()), ContextPlan(echo=True))


def test_accept_answers_role_selection_and_identifies_us(engine_server) -> None:
    server = engine_server()
    role = RoleSelectionItem(STORAGE_COMMITMENT_PUSH_MODEL, False, True)
    peer, ac = raw_associate(server.port, roles=[role])
    peer.close()
    assert ac.user_information.role_selection == (role,)
    assert ac.user_information.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert ac.user_information.implementation_version_name == IMPLEMENTATION_VERSION_NAME
    assert [cx.result for cx in ac.presentation_contexts] == [0, 0]


# -- misbehaving peers ---------------------------------------------------------------------------


def test_malformed_pdu_is_aborted_and_the_server_lives_on(engine_server) -> None:
    server = engine_server()
    peer = RawPeer.connect(server.port)
    peer.send(bytes.fromhex("09 00 00000002 abcd"))
    assert peer.receive() == A_ABORT(2, 1)
    assert peer.receive() is None
    with api.open_association("SCU", remote("ENGINE", server.port), ContextPlan(echo=True)) as a:
        assert a.c_echo() == 0


def test_data_on_an_unaccepted_context_is_aborted(engine_server) -> None:
    closed = threading.Event()
    server = engine_server(Handlers(closed=lambda link: closed.set()))
    peer, _ = raw_associate(server.port)
    peer.send(echo_rq(context_id=99))
    assert isinstance(peer.receive(), A_ABORT)
    assert peer.receive() is None
    assert closed.wait(5)


def test_artim_closes_a_silent_connection(engine_server) -> None:
    server = engine_server(timeouts=Timeouts(acse=0.3, dimse=2, network=10, connect=2))
    peer = RawPeer.connect(server.port)
    start = time.monotonic()
    assert peer.receive() is None
    assert time.monotonic() - start < 3


def test_requests_before_a_release_are_answered_first(engine_server) -> None:
    closed = threading.Event()
    server = engine_server(Handlers(closed=lambda link: closed.set()))
    peer, _ = raw_associate(server.port)
    peer.send(echo_rq(message_id=5) + echo_rq(message_id=6) + A_RELEASE_RQ().encode())
    answers = [peer.receive(), peer.receive()]
    assert [m.command[STATUS] for m in messages_of(answers)] == [0, 0]
    assert isinstance(peer.receive(), A_RELEASE_RP)
    peer.close()
    assert closed.wait(5)
    assert wait_for(lambda: server.active_associations == 0, 5)


def test_dimse_timeout_gives_none_and_aborts() -> None:
    seen = []

    def silent(peer: RawPeer) -> None:
        while (pdu := peer.receive()) is not None:
            seen.append(pdu)

    acceptor = RawAcceptor({VERIFICATION: NON_STORAGE_SYNTAXES}, silent)
    timeouts = Timeouts(acse=2, dimse=0.5, network=10, connect=2)
    a = api.open_association(
        "SCU", remote("RAW", acceptor.port), ContextPlan(echo=True), timeouts=timeouts
    )
    start = time.monotonic()
    assert a.c_echo() is None
    assert time.monotonic() - start < 2
    assert not a.is_open
    acceptor.join()
    assert isinstance(seen[0], P_DATA_TF) and isinstance(seen[-1], A_ABORT)


def test_peer_abort_ends_a_waiting_request() -> None:
    def abort_on_request(peer: RawPeer) -> None:
        assert isinstance(peer.receive(), P_DATA_TF)
        peer.send(A_ABORT(0, 0).encode())

    acceptor = RawAcceptor({VERIFICATION: NON_STORAGE_SYNTAXES}, abort_on_request)
    a = api.open_association(
        "SCU", remote("RAW", acceptor.port), ContextPlan(echo=True), timeouts=Timeouts(dimse=30)
    )
    start = time.monotonic()
    assert a.c_echo() is None
    assert time.monotonic() - start < 5
    acceptor.join()
    assert not a.is_open


def test_release_collision_as_requester() -> None:
    def collide(peer: RawPeer) -> None:
        assert isinstance(peer.receive(), A_RELEASE_RQ)
        peer.send(A_RELEASE_RQ().encode())  # Sta7 -> our Sta9: we answer first
        assert isinstance(peer.receive(), A_RELEASE_RP)
        peer.send(A_RELEASE_RP().encode())
        assert peer.receive() is None  # and we, the requester, close

    acceptor = RawAcceptor({VERIFICATION: NON_STORAGE_SYNTAXES}, collide)
    a = api.open_association(
        "SCU", remote("RAW", acceptor.port), ContextPlan(echo=True), timeouts=FAST
    )
    a.release()
    acceptor.join()
    assert not a.is_open


def test_release_collision_as_acceptor(engine_server) -> None:
    server = engine_server()
    peer, _ = raw_associate(server.port)
    [upper] = list(server._associations)
    releasing = threading.Thread(target=run, args=(upper.release(),))
    releasing.start()
    assert isinstance(peer.receive(), A_RELEASE_RQ)
    peer.send(A_RELEASE_RQ().encode())  # both released at once; the requester answers first
    peer.send(A_RELEASE_RP().encode())
    assert isinstance(peer.receive(), A_RELEASE_RP)  # then the acceptor
    peer.close()
    releasing.join(5)
    assert not releasing.is_alive() and upper.state in (State.CLOSING, State.CLOSED)


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("archive"), ca.issue("modality")


def test_tls_with_client_certificates(engine_server, pki) -> None:
    ca, archive, modality = pki
    server = engine_server(
        tls=TlsConfig(archive.cert, archive.key, ca.cert, require_client_cert=True)
    )
    target = remote("ENGINE", server.port)
    tls = TlsConfig(modality.cert, modality.key, ca.cert)
    with api.open_association("SCU", target, ContextPlan(echo=True), tls=tls) as a:
        assert a.c_echo() == 0
    # no client certificate: with TLS 1.3 the server refuses it after our side of the handshake
    with pytest.raises(AssociationError, match="cannot connect|aborted the association"):
        api.open_association("SCU", target, ContextPlan(echo=True), tls=TlsConfig(ca=ca.cert))
    with pytest.raises(AssociationError):  # plain TCP to a TLS port
        api.open_association("SCU", target, ContextPlan(echo=True), timeouts=FAST)
