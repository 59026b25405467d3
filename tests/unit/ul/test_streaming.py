"""Streamed data sets and answers from the event loop: the assembler hands a long data set on
piece by piece, the engine stops reading while the service is behind (memory stays bounded),
small C-STOREs are answered on the loop and never overtake an earlier answer. Real TCP on
127.0.0.1 against the engine, raw peers."""

from __future__ import annotations

import hashlib
import struct
import threading
import time

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL
from stgcmt.ul.acse import propose
from stgcmt.ul.dimse import (
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    DATA_SET_PRESENT,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    PRIORITY,
    REQUESTED_SOP_CLASS_UID,
    REQUESTED_SOP_INSTANCE_UID,
    STATUS,
    STREAM_PREFIX_BYTES,
    CommandField,
    Fragment,
    Message,
    MessageAssembler,
    encode_command_set,
    fragments,
)
from stgcmt.ul.pdu import A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF
from stgcmt.ul.pdu_items import PresentationDataValueItem
from stgcmt.ul.seam import NON_STORAGE_SYNTAXES, Handlers, StoreRequest

from .test_trust_boundary import associate, rss
from support.common import SECONDARY_CAPTURE, make_dataset
from support.engine import RawPeer

MiB = 1 << 20
EXPLICIT = "1.2.840.10008.1.2.1"


def _c_store(message_id: int = 1, uid: str = "1.2.3.4") -> dict:
    return {
        AFFECTED_SOP_CLASS_UID: SECONDARY_CAPTURE,
        COMMAND_FIELD: CommandField.C_STORE_RQ,
        MESSAGE_ID: message_id,
        PRIORITY: 0,
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
        AFFECTED_SOP_INSTANCE_UID: uid,
    }


# -- the assembler ------------------------------------------------------------------------------


def _feed(assembler: MessageAssembler, data: bytes, piece: int = 16384) -> list:
    out = [assembler.feed(PresentationDataValueItem(1, 0x03, encode_command_set(_c_store())))]
    for start in range(0, len(data), piece):
        last = start + piece >= len(data)
        pdv = PresentationDataValueItem(1, 0x02 if last else 0x00, data[start : start + piece])
        out.append(assembler.feed(pdv))
    return [item for item in out if item is not None]


def test_a_long_data_set_is_handed_on_as_it_arrives() -> None:
    offered: list[bytes] = []
    assembler = MessageAssembler(stream=lambda message, first: offered.append(first) or True)
    data = bytes(range(256)) * 1024  # 256 KiB
    start, *rest = _feed(assembler, data)
    assert isinstance(start, Message) and start.streamed
    assert start.data_set == offered[0] == data[: len(start.data_set)]
    assert len(start.data_set) >= STREAM_PREFIX_BYTES
    assert all(isinstance(f, Fragment) for f in rest) and [f.last for f in rest][-1]
    assert start.data_set + b"".join(bytes(f.data) for f in rest) == data
    assert assembler.receiving is None  # over: the next message starts afresh


def test_a_data_set_declined_or_short_is_held_whole() -> None:
    data = b"x" * (3 * STREAM_PREFIX_BYTES)
    [whole] = _feed(MessageAssembler(stream=lambda message, first: False), data)
    assert not whole.streamed and whole.data_set == data
    asked: list[int] = []
    short = b"y" * (STREAM_PREFIX_BYTES - 1)
    [small] = _feed(MessageAssembler(stream=lambda m, first: asked.append(1) or True), short)
    assert small.data_set == short and not asked  # complete before it could be offered


def test_a_data_set_over_the_cap_before_its_first_bytes_is_still_refused() -> None:
    assembler = MessageAssembler(max_data_set=1000, stream=lambda message, first: True)
    [message] = _feed(assembler, b"z" * (2 * STREAM_PREFIX_BYTES))
    assert message.oversized and message.data_set is None


# -- the engine -----------------------------------------------------------------------------------


def _encoded(ds) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _large(size: int) -> tuple[str, bytes]:
    """(SOP Instance UID, a data set with ``size`` bytes of Pixel Data, OB)."""
    ds = make_dataset(pixel_bytes=2)
    del ds.PixelData
    pixels = bytes(range(256)) * (size // 256)
    return ds.SOPInstanceUID, _encoded(ds) + struct.pack(
        "<HH2s2xI", 0x7FE0, 0x0010, b"OB", len(pixels)
    ) + pixels


class SlowSink:
    """A StoreSink on a slow disk: every write takes ``delay`` seconds."""

    def __init__(self, first: bytes, delay: float) -> None:
        self.digest = hashlib.sha256(first)
        self.delay = delay
        self.finished = threading.Event()
        self.thread = threading.current_thread().name

    def write(self, data) -> None:
        time.sleep(self.delay)
        self.digest.update(data)

    def finish(self) -> int:
        self.finished.set()
        return 0

    def discard(self) -> None:
        pass


def _send_whole(peer: RawPeer, command: dict, data: bytes, context_id: int = 5) -> None:
    """One message, PDU by PDU (never a second copy of ``data``)."""
    pieces = fragments(context_id, encode_command_set(command), [data], 65536)
    for header in pieces:
        peer.sock.sendall(header + bytes(next(pieces)))


def _responses(peer: RawPeer, count: int) -> list[dict]:
    assembler, found = MessageAssembler(), []
    while len(found) < count:
        pdu = peer.receive()
        assert isinstance(pdu, P_DATA_TF), pdu
        for pdv in pdu.items:
            message = assembler.feed(pdv)
            if isinstance(message, Message):
                found.append(message.command)
    return found


def _explicit_association(port: int) -> RawPeer:
    contexts = propose(
        [
            ("1.2.840.10008.1.1", NON_STORAGE_SYNTAXES),
            (STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES),
            (SECONDARY_CAPTURE, (EXPLICIT,)),
        ]
    )
    peer, _ = associate(port, contexts, max_pdu=65536)
    return peer


def test_a_slow_sink_stops_the_reading_and_memory_stays_bounded(engine_server) -> None:
    sinks: list[SlowSink] = []

    def stream(request: StoreRequest) -> SlowSink:
        sinks.append(SlowSink(request.dataset, delay=0.003))
        return sinks[-1]

    server = engine_server(Handlers(c_store=lambda request: 0, c_store_stream=stream), storage=True)
    peer = _explicit_association(server.port)
    uid, data = _large(40 * MiB)
    command = _c_store(uid=uid)
    baseline, peak = rss(), [0]
    sending = threading.Thread(target=_send_whole, args=(peer, command, data), daemon=True)
    sending.start()
    while sending.is_alive():
        peak[0] = max(peak[0], rss())
        time.sleep(0.01)
    [answer] = _responses(peer, 1)
    assert answer[STATUS] == 0
    assert sinks[0].finished.is_set()
    assert sinks[0].digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sinks[0].thread.startswith("stgcmt-association")
    growth = (peak[0] - baseline) / MiB
    assert growth < 24, f"RSS grew by {growth:.0f} MB for a 40 MB data set"
    peer.close()


def test_small_c_stores_are_answered_on_the_loop_long_ones_in_the_thread(engine_server) -> None:
    threads: list[str] = []

    def store(request: StoreRequest) -> int:
        threads.append(threading.current_thread().name)
        return 0

    server = engine_server(Handlers(c_store=store), storage=True)
    peer = _explicit_association(server.port)
    _send_whole(peer, _c_store(1), b"\0" * 1000)
    _send_whole(peer, _c_store(2), b"\0" * (STREAM_PREFIX_BYTES * 2))  # held whole: no stream
    assert [r[STATUS] for r in _responses(peer, 2)] == [0, 0]
    assert threads[0] == "stgcmt-engine"
    assert threads[1].startswith("stgcmt-association")
    peer.close()


def test_an_answer_from_the_loop_never_overtakes_an_earlier_one(engine_server) -> None:
    """A peer that does not wait (no Asynchronous Operations Window negotiated) still gets its
    responses in the order of its requests."""
    release = threading.Event()

    def n_action(link, request):
        release.wait(5)
        return 0, None

    server = engine_server(Handlers(c_store=lambda r: 0, n_action=n_action), storage=True)
    peer = _explicit_association(server.port)
    n_action_rq = {
        REQUESTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH_MODEL,
        COMMAND_FIELD: CommandField.N_ACTION_RQ,
        MESSAGE_ID: 1,
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
        REQUESTED_SOP_INSTANCE_UID: "1.2.840.10008.1.20.1.1",
        0x1008: 1,
    }
    _send_whole(peer, n_action_rq, b"\0" * 8, context_id=3)
    _send_whole(peer, _c_store(2), b"\0" * 100)
    time.sleep(0.3)  # the C-STORE has arrived while the N-ACTION is being handled
    release.set()
    answered = [r[MESSAGE_ID_BEING_RESPONDED_TO] for r in _responses(peer, 2)]
    assert answered == [1, 2]
    peer.close()


@pytest.mark.parametrize("refusal", [0xA900, 0x0000])
def test_a_stream_refused_on_its_first_bytes_is_answered_after_its_last(engine_server, refusal):
    """The rest of a refused (or duplicate) data set is read and dropped; the answer comes
    once it has all arrived, and the association goes on."""
    server = engine_server(
        Handlers(c_store=lambda r: 0, c_store_stream=lambda request: refusal), storage=True
    )
    peer = _explicit_association(server.port)
    uid, data = _large(2 * MiB)
    _send_whole(peer, _c_store(uid=uid), data)
    [answer] = _responses(peer, 1)
    assert answer[STATUS] == refusal
    _send_whole(peer, _c_store(2), b"\0" * 100)
    assert _responses(peer, 1)[0][STATUS] == 0
    peer.close()


def test_a_release_in_the_middle_of_a_streamed_data_set_drops_it(engine_server, monkeypatch):
    """A peer that sends A-RELEASE-RQ before the last fragment: the stream is discarded (no
    file), the release answered, the service thread lives on to the end."""
    died: list[object] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    sinks: list[SlowSink] = []
    discarded = threading.Event()

    def stream(request: StoreRequest) -> SlowSink:
        sinks.append(SlowSink(request.dataset, delay=0))
        sinks[-1].discard = discarded.set  # type: ignore[method-assign]
        return sinks[-1]

    server = engine_server(Handlers(c_store=lambda r: 0, c_store_stream=stream), storage=True)
    peer = _explicit_association(server.port)
    uid, data = _large(8 * MiB)
    pieces = list(fragments(5, encode_command_set(_c_store(uid=uid)), [data], 65536))
    pdus = [pieces[i] + bytes(pieces[i + 1]) for i in range(0, len(pieces), 2)]
    for pdu in pdus[:4]:
        peer.sock.sendall(pdu)
    peer.sock.sendall(A_RELEASE_RQ().encode())
    assert isinstance(peer.receive(), A_RELEASE_RP)
    assert discarded.wait(5)
    assert not sinks[0].finished.is_set()
    assert died == []
    peer.close()
