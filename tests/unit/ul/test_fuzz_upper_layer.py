"""Hypothesis fuzz of raw bytes into the upper layer: one server for the module, each example a
fresh connection carrying random or structurally mutated PDUs. Afterwards the server still
associates and answers a C-ECHO, has no connection left over, and memory stayed bounded."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stgcmt import ul as api
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.ul.acse import propose, user_information
from stgcmt.ul.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from stgcmt.ul.pdu_items import PresentationDataValueItem
from stgcmt.ul.seam import NON_STORAGE_SYNTAXES, ContextPlan, Handlers

from support.common import LOCALHOST, remote, wait_for
from support.engine import FAST

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RQ = A_ASSOCIATE_RQ(
    "ENGINE",
    "FUZZ",
    propose(
        [
            (VERIFICATION, NON_STORAGE_SYNTAXES),
            (STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES),
        ]
    ),
    user_information(16384),
).encode()


def rss() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024


@pytest.fixture(scope="module")
def server():
    handlers = Handlers(
        n_action=lambda link, request: (0, None), n_event_report=lambda link, report: 0
    )
    started = api.listen("ENGINE", LOCALHOST, 0, handlers, timeouts=FAST, storage=True).start()
    before = rss()
    yield started
    try:
        with api.open_association(
            "SCU", remote("ENGINE", started.port), ContextPlan(echo=True)
        ) as a:
            assert a.c_echo() == 0
        assert wait_for(
            lambda: started.active_associations == 0 and started.pending_connections == 0, 10
        ), (started.active_associations, started.pending_connections)
        assert rss() - before < 100 << 20
    finally:
        started.stop()


def exchange(port: int, *chunks: bytes, wait_for_answer: bool = False) -> None:
    """Send the chunks on a new connection (reading the AC first if asked), then close."""
    with socket.create_connection((LOCALHOST, port), timeout=5) as sock:
        sock.settimeout(2)
        try:
            for n, chunk in enumerate(chunks):
                sock.sendall(chunk)
                if wait_for_answer and n == 0:
                    sock.recv(65536)
            sock.settimeout(0.005)
            sock.recv(65536)
        except OSError:
            pass


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body)) + body


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(server, data: bytes) -> None:
    exchange(server.port, data)


@FUZZ
@given(st.integers(0, len(RQ)), st.binary(max_size=200), st.integers(0, 0xFFFF_FFFF))
def test_rq_prefix_then_garbage(server, cut: int, garbage: bytes, length: int) -> None:
    mutated = bytearray(RQ[:cut] + garbage)
    if len(mutated) >= 6 and length % 3 == 0:
        mutated[2:6] = struct.pack(">L", length)  # a lying PDU length too
    exchange(server.port, bytes(mutated))


@FUZZ
@given(st.integers(0, 255), st.integers(0, 0xFFFF_FFFF), st.binary(max_size=64))
def test_random_headers(server, pdu_type: int, length: int, body: bytes) -> None:
    exchange(server.port, struct.pack(">BxL", pdu_type, length) + body)


pdvs = st.lists(
    st.tuples(st.sampled_from([1, 3, 5, 255]), st.integers(0, 255), st.binary(max_size=120)),
    min_size=0,
    max_size=4,
)


@FUZZ
@given(st.lists(st.one_of(pdvs, st.binary(max_size=80)), min_size=1, max_size=4))
def test_p_data_with_random_pdvs(server, pdus: list) -> None:
    encoded = []
    for item in pdus:
        if isinstance(item, bytes):
            encoded.append(pdu(0x04, item))  # a P-DATA body of raw garbage
        else:
            values = tuple(PresentationDataValueItem(c, h, d) for c, h, d in item)
            encoded.append(P_DATA_TF(values).encode())
    exchange(server.port, RQ, *encoded, wait_for_answer=True)
