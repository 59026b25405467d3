"""Every byte from a peer is hostile: the upper layer bounds what it buffers and for how long,
refuses what cannot work, and always answers a request. Real TCP on 127.0.0.1, raw peers."""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
import time

import pytest

from stgcmt import ul as api
from stgcmt.config import Timeouts, TlsConfig
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.ul.acse import propose, user_information
from stgcmt.ul.dimse import (
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    DATA_SET_PRESENT,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    NO_DATA_SET,
    PRIORITY,
    REQUESTED_SOP_CLASS_UID,
    REQUESTED_SOP_INSTANCE_UID,
    STATUS,
    CommandField,
    MessageAssembler,
    encode_command_set,
    fragments,
)
from stgcmt.ul.pdu import A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, P_DATA_TF
from stgcmt.ul.pdu_items import PresentationDataValueItem
from stgcmt.ul.seam import (
    NON_STORAGE_SYNTAXES,
    STORAGE_SOP_CLASSES,
    AssociationError,
    ContextPlan,
    Handlers,
)

from support.common import LOCALHOST, SECONDARY_CAPTURE, remote, wait_for
from support.engine import FAST, RawAcceptor, RawPeer
from support.tls_certs import CertificateAuthority

IMPLICIT = "1.2.840.10008.1.2"
MiB = 1 << 20


def rss() -> int:
    """This process's resident set size in bytes (the server runs in it)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BxL", pdu_type, length)


def associate(port: int, contexts=None, max_pdu: int = 16384) -> tuple[RawPeer, A_ASSOCIATE_AC]:
    """Associate by hand: Verification (1), Storage Commitment (3), Secondary Capture (5)."""
    peer = RawPeer.connect(port)
    contexts = contexts or propose(
        [
            (VERIFICATION, NON_STORAGE_SYNTAXES),
            (STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES),
            (SECONDARY_CAPTURE, (IMPLICIT,)),
        ]
    )
    peer.send(A_ASSOCIATE_RQ("ENGINE", "RAW", contexts, user_information(max_pdu)).encode())
    ac = peer.receive()
    assert isinstance(ac, A_ASSOCIATE_AC), ac
    return peer, ac


def send_message(peer: RawPeer, context_id: int, command: dict, data: bytes = b"") -> None:
    encoded = encode_command_set(command)
    peer.send(
        b"".join(bytes(p) for p in fragments(context_id, encoded, [data] if data else [], 16384))
    )


def response(peer: RawPeer) -> dict:
    """The next complete message's command set (the peer must answer: no timeout allowed)."""
    assembler = MessageAssembler()
    while True:
        pdu = peer.receive()
        assert isinstance(pdu, P_DATA_TF), f"expected a response, got {pdu!r}"
        for pdv in pdu.items:
            message = assembler.feed(pdv)
            if message is not None:
                return message.command


def echo(peer: RawPeer, message_id: int = 7) -> int:
    command = {
        AFFECTED_SOP_CLASS_UID: VERIFICATION,
        COMMAND_FIELD: CommandField.C_ECHO_RQ,
        MESSAGE_ID: message_id,
        COMMAND_DATA_SET_TYPE: NO_DATA_SET,
    }
    send_message(peer, 1, command)
    answer = response(peer)
    assert answer[MESSAGE_ID_BEING_RESPONDED_TO] == message_id
    return int(answer[STATUS])


def aborted(peer: RawPeer) -> A_ABORT:
    pdu = peer.receive()
    assert isinstance(pdu, A_ABORT), pdu
    assert peer.receive() is None  # and the connection closed
    return pdu


def send_ignoring_close(sock: socket.socket, data: bytes, total: int) -> int:
    """Send ``data`` repeatedly up to ``total`` bytes, until the server closes; bytes sent."""
    sent = 0
    try:
        while sent < total:
            sent += sock.send(data)
    except OSError:
        pass
    return sent


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pdu_type", [0x01, 0x04, 0x07, 0x99])
def test_a_4_gb_header_before_the_rq_is_aborted_from_its_header(engine_server, pdu_type) -> None:
    server = engine_server()
    before = rss()
    peer = RawPeer.connect(server.port)
    peer.send(header(pdu_type, 0xFFFF_FFF0))
    start = time.monotonic()
    send_ignoring_close(peer.sock, bytes(MiB), 256 * MiB)
    abort = aborted(peer)
    assert time.monotonic() - start < 1.5  # not ARTIM: the header decided
    assert abort.source == 2
    assert rss() - before < 64 * MiB
    peer.close()
    again, _ = associate(server.port)
    assert echo(again) == 0


def test_p_data_longer_than_advertised_is_aborted(engine_server) -> None:
    server = engine_server(max_pdu=16384)
    peer, ac = associate(server.port)
    assert ac.user_information.maximum_length == 16384
    assert echo(peer) == 0
    # well formed (a command fragment, not the last), one byte longer than we allow
    too_long = P_DATA_TF((PresentationDataValueItem(1, 0x01, bytes(16385 - 6)),)).encode()
    assert len(too_long) == 6 + 16385
    peer.send(too_long)
    assert aborted(peer).reason == 6  # invalid PDU parameter


def test_we_never_advertise_unlimited(engine_server) -> None:
    server = engine_server(max_pdu=0)
    peer, ac = associate(server.port)
    assert ac.user_information.maximum_length == 65536
    peer.close()


def test_command_fragments_without_the_last_bit_are_aborted_past_the_cap(engine_server) -> None:
    server = engine_server()
    peer, _ = associate(server.port)
    fragment = P_DATA_TF((PresentationDataValueItem(1, 0x01, bytes(16000)),)).encode()
    send_ignoring_close(peer.sock, fragment, 40 * len(fragment))
    assert aborted(peer).reason == 6


def test_an_rq_with_128_contexts_and_many_syntaxes_passes(engine_server) -> None:
    server = engine_server(storage=True)
    syntaxes = (IMPLICIT,) + tuple(f"1.2.826.0.1.3680043.8.498.{n}.{'9' * 30}" for n in range(29))
    classes = list(STORAGE_SOP_CLASSES)[:127] + [VERIFICATION]
    contexts = propose([(uid, syntaxes) for uid in classes])
    rq = A_ASSOCIATE_RQ("ENGINE", "RAW", contexts, user_information(16384))
    assert len(rq.encode()) > 200_000
    peer, ac = associate(server.port, contexts)
    assert len(ac.presentation_contexts) == 128
    assert all(cx.result == 0 for cx in ac.presentation_contexts)
    peer.close()


def test_an_rq_over_the_associate_cap_is_aborted(engine_server) -> None:
    server = engine_server()
    peer = RawPeer.connect(server.port)
    peer.send(header(0x01, 2 * MiB))
    assert aborted(peer).reason == 6


def test_an_oversized_data_set_is_refused_with_a700(engine_server, caplog) -> None:
    stored = []
    server = engine_server(
        Handlers(c_store=lambda request: stored.append(request) or 0),
        storage=True,
        max_dataset_bytes=100_000,
    )
    peer, _ = associate(server.port)
    command = {
        AFFECTED_SOP_CLASS_UID: SECONDARY_CAPTURE,
        COMMAND_FIELD: CommandField.C_STORE_RQ,
        MESSAGE_ID: 3,
        PRIORITY: 0,
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
        AFFECTED_SOP_INSTANCE_UID: "1.2.3.4",
    }
    with caplog.at_level(logging.WARNING, "stgcmt.engine"):
        send_message(peer, 5, command, bytes(300_000))
        answer = response(peer)
    assert answer[STATUS] == 0xA700
    assert not stored
    assert "127.0.0.1" in caplog.text and "over 100000 bytes" in caplog.text
    send_message(peer, 5, command | {MESSAGE_ID: 4}, bytes(1000))  # a fitting one still goes
    assert response(peer)[STATUS] == 0
    assert echo(peer) == 0


# -- slots and deadlines ---------------------------------------------------------------------


def test_idle_sockets_cannot_lock_out_a_real_association(engine_server, caplog) -> None:
    server = engine_server(max_associations=2, max_pending_associations=16)
    with caplog.at_level(logging.WARNING, "stgcmt.engine"):
        idle = [socket.create_connection((LOCALHOST, server.port), timeout=5) for _ in range(64)]
        assert wait_for(lambda: server.pending_connections == 16, 5)
        start = time.monotonic()
        with api.open_association(
            "SCU", remote("ENGINE", server.port), ContextPlan(echo=True)
        ) as a:
            assert a.c_echo() == 0
            assert server.active_associations == 1
        assert time.monotonic() - start < 1.5
    assert idle[0].recv(16) == b""  # the oldest were dropped
    assert "oldest dropped" in caplog.text
    for sock in idle:
        sock.close()


def trickle(peer: RawPeer, stop: threading.Event) -> None:
    try:
        while not stop.wait(0.5):
            peer.sock.send(b"\0")
    except OSError:
        pass


@pytest.mark.parametrize(
    "timeouts, words",
    [
        (Timeouts(acse=2, dimse=2, network=30, connect=2, pdu=1.5), "did not arrive whole"),
        (Timeouts(acse=2, dimse=2, network=1.5, connect=2, pdu=30), "no PDU for"),
    ],
)
def test_a_trickle_is_dropped_at_the_deadline(engine_server, caplog, timeouts, words) -> None:
    server = engine_server(timeouts=timeouts)
    peer, _ = associate(server.port)
    peer.send(header(0x04, 1000))
    stop = threading.Event()
    thread = threading.Thread(target=trickle, args=(peer, stop), daemon=True)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, "stgcmt.engine"):
        thread.start()
        try:
            aborted(peer)
        finally:
            stop.set()
            thread.join(5)
    assert 1.2 < time.monotonic() - start < 4
    assert words in caplog.text and "127.0.0.1" in caplog.text


def test_a_silent_connection_is_dropped_at_the_rq_deadline(engine_server, caplog) -> None:
    server = engine_server(
        timeouts=Timeouts(acse=30, dimse=2, network=30, connect=2, associate_rq=0.5)
    )
    peer = RawPeer.connect(server.port)
    with caplog.at_level(logging.WARNING, "stgcmt.engine"):
        start = time.monotonic()
        assert peer.receive() is None
    assert time.monotonic() - start < 2
    assert "no A-ASSOCIATE-RQ within 0.5 s" in caplog.text


# -- refusing what cannot work --------------------------------------------------------------------


def test_a_peer_max_pdu_of_3_is_rejected(engine_server, caplog) -> None:
    server = engine_server()
    peer = RawPeer.connect(server.port)
    contexts = propose([(VERIFICATION, NON_STORAGE_SYNTAXES)])
    with caplog.at_level(logging.WARNING, "stgcmt.engine"):
        peer.send(A_ASSOCIATE_RQ("ENGINE", "RAW", contexts, user_information(3)).encode())
        assert peer.receive() == A_ASSOCIATE_RJ(1, 1, 1)
    assert "maximum PDU length 3" in caplog.text
    assert server.active_associations == 0


def test_an_acceptor_announcing_max_pdu_3_is_refused(caplog) -> None:
    seen = []
    acceptor = RawAcceptor(
        {VERIFICATION: NON_STORAGE_SYNTAXES}, lambda p: seen.append(p.receive()), max_pdu=3
    )
    with pytest.raises(AssociationError, match="maximum PDU length of 3 bytes, too small"):
        api.open_association(
            "SCU", remote("RAW", acceptor.port), ContextPlan(echo=True), timeouts=FAST
        )
    acceptor.join()
    assert isinstance(seen[0], A_ABORT)


# -- always an answer -----------------------------------------------------------------------------


def test_a_raising_handler_is_a_failure_status_and_the_association_serves_on(engine_server) -> None:
    closed = threading.Event()

    def broken(link, request):
        raise RuntimeError("journal on fire")

    def closing(link):
        closed.set()
        raise RuntimeError("and this too")

    server = engine_server(Handlers(n_action=broken, closed=closing))
    peer, _ = associate(server.port)
    command = {
        REQUESTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH_MODEL,
        COMMAND_FIELD: CommandField.N_ACTION_RQ,
        MESSAGE_ID: 9,
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
        REQUESTED_SOP_INSTANCE_UID: "1.2.840.10008.1.20.1.1",
        0x1008: 1,
    }
    send_message(peer, 3, command, b"\x08\x00\x50\x11\x02\x00\x00\x00")
    assert response(peer)[STATUS] == 0x0110
    assert echo(peer) == 0
    peer.close()
    assert closed.wait(5)
    assert wait_for(lambda: server.active_associations == 0, 5)


@pytest.mark.parametrize("field", ["c_store", "n_action"])
def test_a_non_ascii_uid_still_gets_a_response(engine_server, field) -> None:
    server = engine_server(
        Handlers(c_store=lambda request: 0, n_action=lambda link, request: (0, None)),
        storage=True,
    )
    peer, _ = associate(server.port)
    if field == "c_store":
        context, command = (
            5,
            {
                AFFECTED_SOP_CLASS_UID: SECONDARY_CAPTURE,
                COMMAND_FIELD: CommandField.C_STORE_RQ,
                MESSAGE_ID: 5,
                PRIORITY: 0,
                COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
                AFFECTED_SOP_INSTANCE_UID: "1.2.3.é".encode(),
            },
        )
    else:
        context, command = (
            3,
            {
                REQUESTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH_MODEL,
                COMMAND_FIELD: CommandField.N_ACTION_RQ,
                MESSAGE_ID: 5,
                COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
                REQUESTED_SOP_INSTANCE_UID: "1.2.840.10008.1.20.1.1\xff".encode("latin-1"),
                0x1008: b"\x01\x00\x00",  # an Action Type ID of the wrong length, echoed back
            },
        )
    send_message(peer, context, command, b"\x08\x00\x50\x11\x02\x00\x00\x00")
    answer = response(peer)
    assert answer[MESSAGE_ID_BEING_RESPONDED_TO] == 5
    assert STATUS in answer
    assert echo(peer) == 0


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, stranger = (
        CertificateAuthority(folder / "ca"),
        CertificateAuthority(folder / "other", "other CA"),
    )
    return ca, ca.issue("archive"), ca.issue("modality"), stranger, stranger.issue("impostor")


def test_tls_failures_are_logged_by_the_server_and_explained_to_the_client(
    engine_server, pki, caplog
) -> None:
    ca, archive, modality, stranger, impostor = pki
    server = engine_server(
        tls=TlsConfig(archive.cert, archive.key, ca.cert, require_client_cert=True)
    )
    target = remote("ENGINE", server.port)
    echo_plan = ContextPlan(echo=True)
    with caplog.at_level(logging.INFO, "stgcmt.engine"):
        # we do not trust the archive's CA: the reason is the certificate, not "refused"
        untrusting = TlsConfig(modality.cert, modality.key, stranger.cert)
        with pytest.raises(AssociationError) as error:
            api.open_association("SCU", target, echo_plan, tls=untrusting, timeouts=FAST)
        assert re.fullmatch(
            rf"TLS handshake with ENGINE@127\.0\.0\.1:{server.port} failed: "
            r"certificate verify failed: [a-z -]*certificate[a-z -]*",
            str(error.value),
        ), str(error.value)
        assert wait_for(lambda: server_tls_lines(caplog), 5)
        # the archive does not trust our certificate
        with pytest.raises(AssociationError):
            bad = TlsConfig(impostor.cert, impostor.key, ca.cert)
            with api.open_association("SCU", target, echo_plan, tls=bad, timeouts=FAST) as a:
                a.c_echo()
        assert wait_for(lambda: len(server_tls_lines(caplog)) >= 2, 5)
        # plain TCP to the TLS port
        with pytest.raises(AssociationError):
            api.open_association("SCU", target, echo_plan, timeouts=FAST)
        assert wait_for(lambda: len(server_tls_lines(caplog)) >= 3, 5)
        # and a good client still gets through
        good = TlsConfig(modality.cert, modality.key, ca.cert)
        with api.open_association("SCU", target, echo_plan, tls=good) as a:
            assert a.c_echo() == 0
    lines = server_tls_lines(caplog)
    assert len(lines) == 3, lines
    assert "certificate verify failed" in lines[1], lines  # the archive says why it refused
    assert "version" in lines[2] or "http" in lines[2], lines


def server_tls_lines(caplog) -> list[str]:
    """The server's log lines about failed handshakes (address and reason)."""
    prefix = "TLS handshake with 127.0.0.1:"
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]
