"""Structure-aware fuzzing of the upper layer (hypothesis): one server for the module, each
example a fresh connection from a raw peer (tests/support/engine.py RawPeer) sending a valid
A-ASSOCIATE-RQ mutated field by field, or a valid association followed by a P-DATA-TF whose
PDV headers, lengths, context IDs, message control headers or command set are mutated. The
reaction is computed from what was generated (PS3.8 9.3 and the state table, Annex D.1 for
lengths) and asserted from what the peer receives: A-ASSOCIATE-AC with each context's result
and transfer syntax, A-ASSOCIATE-RJ with its result/source/reason, A-ABORT with its source and
reason, or the DIMSE response with its status. Afterwards the server still associates, has no
connection left over, and memory stayed bounded."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from stgcmt import ul as api
from stgcmt.dicom.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.ul.dimse import STATUS, decode_command_set, encode_command_set
from stgcmt.ul.messages import CEchoRq, NActionRq
from stgcmt.ul.pdu import A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_RELEASE_RP, P_DATA_TF
from stgcmt.ul.seam import ContextPlan, Handlers

from support.common import LOCALHOST, SECONDARY_CAPTURE, remote, wait_for
from support.engine import FAST, RawPeer

MAX_PDU = 16384
RQ_EXAMPLES = 600
P_DATA_EXAMPLES = 600
FUZZ = dict(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OUTCOMES: Counter[str] = Counter()
UNKNOWN_UID = "1.2.826.0.1.3680043.10.9.1"
SUPPORTED = {  # what the server accepts, in its order of preference
    VERIFICATION: (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN),
    STORAGE_COMMITMENT_PUSH_MODEL: (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN),
}
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def rss() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024


@pytest.fixture(scope="module")
def server():
    handlers = Handlers(
        n_action=lambda link, request: (0, None), n_event_report=lambda link, report: 0
    )
    started = api.listen(
        "ENGINE",
        LOCALHOST,
        0,
        handlers,
        timeouts=FAST,
        storage=False,
        commitment=True,
        max_pdu=MAX_PDU,
    ).start()
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


# -- building PDUs by hand ----------------------------------------------------------------------


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body) if length is None else length) + body


@dataclass
class Context:
    context_id: int
    abstract: str | None  # None: the abstract syntax sub-item is missing
    syntaxes: tuple[str, ...]

    def encode(self) -> bytes:
        subs = b"" if self.abstract is None else item(0x30, self.abstract.encode())
        subs += b"".join(item(0x40, ts.encode()) for ts in self.syntaxes)
        return item(0x20, bytes((self.context_id, 0, 0, 0)) + subs)

    def answer(self) -> tuple[int, str | None]:
        """(result, transfer syntax if accepted) PS3.8 Table 9-18, the server's preference."""
        ours = SUPPORTED.get(self.abstract or "")
        if ours is None:
            return 3, None  # abstract syntax not supported
        chosen = next((ts for ts in ours if ts in self.syntaxes), None)
        return (4, None) if chosen is None else (0, chosen)


@dataclass
class AssociateRQ:
    protocol_version: int = 1
    called: bytes = b"ENGINE"
    calling: bytes = b"FUZZ"
    application_context: str | None = APPLICATION_CONTEXT
    contexts: list[Context] = field(
        default_factory=lambda: [
            Context(1, VERIFICATION, (IMPLICIT_VR_LITTLE_ENDIAN,)),
            Context(3, STORAGE_COMMITMENT_PUSH_MODEL, (EXPLICIT_VR_LITTLE_ENDIAN,)),
        ]
    )
    max_length: int | None = MAX_PDU  # None: no Maximum Length sub-item
    extra_sub_items: bool = False  # Asynchronous Operations Window, an unknown sub-item
    user_information: bool = True

    def items(self) -> list[bytes]:
        out = []
        if self.application_context is not None:
            out.append(item(0x10, self.application_context.encode()))
        out += [cx.encode() for cx in self.contexts]
        if self.user_information:
            subs = (
                b"" if self.max_length is None else item(0x51, struct.pack(">L", self.max_length))
            )
            subs += item(0x52, b"1.2.826.0.1.3680043.10.9")
            if self.extra_sub_items:
                subs += item(0x53, struct.pack(">HH", 1, 1)) + item(0x5F, b"\x01\x02\x03")
            out.append(item(0x50, subs))
        return out

    def fixed(self) -> bytes:
        return (
            struct.pack(">H", self.protocol_version)
            + b"\x00\x00"
            + self.called.ljust(16)[:16]
            + self.calling.ljust(16)[:16]
            + bytes(32)
        )


@dataclass
class RqCase:
    rq: AssociateRQ
    cut: int | None = None  # the body cut to this many bytes (the PDU length says so)
    lying_length: int | None = None
    first_pdu_type: int | None = None  # some other PDU before any A-ASSOCIATE-RQ
    mutations: tuple[str, ...] = ()

    def body(self) -> bytes:
        body = self.rq.fixed() + b"".join(self.rq.items())
        return body if self.cut is None else body[: self.cut]

    def wire(self) -> bytes:
        if self.first_pdu_type is not None:
            return pdu(self.first_pdu_type, bytes(4))
        return pdu(0x01, self.body(), self.lying_length)

    def expected(self) -> tuple:
        """('AC', contexts answers) / ('RJ', result, source, reason) / ('ABORT', source,
        reason) / ('CLOSE',)."""
        if self.first_pdu_type is not None:
            if self.first_pdu_type not in range(1, 8):
                return ("ABORT", 2, 1)  # unrecognised PDU
            if self.first_pdu_type == 7:
                return ("CLOSE",)  # an A-ABORT before anything: the connection just closes
            return ("ABORT", 2, 2)  # unexpected PDU before the A-ASSOCIATE-RQ
        if self.lying_length is not None and self.lying_length > 1 << 20:
            return ("ABORT", 2, 6)  # refused from its header: no legitimate RQ is that long
        rq = self.rq
        full = len(rq.fixed()) + sum(map(len, rq.items()))
        if self.cut is not None and self.cut < full:  # (a cut past the end cuts nothing)
            if self.cut < 68:
                return ("ABORT", 2, 6)  # truncated fixed fields
            boundaries = [68]
            for encoded in rq.items():
                boundaries.append(boundaries[-1] + len(encoded))
            if self.cut not in boundaries:
                return ("ABORT", 2, 6)  # an item overruns the PDU
            rq = _first_items(rq, boundaries.index(self.cut))
        if not all(c.isascii() for c in (rq.called, rq.calling)):
            return ("ABORT", 2, 6)  # AE titles are ASCII
        if any(cx.abstract is None or not cx.syntaxes for cx in rq.contexts):
            return ("ABORT", 2, 6)  # a presentation context without its syntaxes
        max_length = rq.max_length if rq.user_information and rq.max_length is not None else 0
        if 0 < max_length <= 6:
            return ("RJ", 1, 1, 1)  # cannot carry a fragment: permanent, user, no reason
        if rq.application_context != APPLICATION_CONTEXT:
            return ("RJ", 1, 1, 2)  # application context name not supported
        if not rq.protocol_version & 1:
            return ("RJ", 1, 2, 2)  # protocol version not supported
        return ("AC", tuple((cx.context_id, *cx.answer()) for cx in rq.contexts))


def _first_items(rq: AssociateRQ, kept: int) -> AssociateRQ:
    names = (["app"] if rq.application_context is not None else []) + ["cx"] * len(rq.contexts)
    names += ["user"] if rq.user_information else []
    names = names[:kept]
    return replace(
        rq,
        application_context=rq.application_context if "app" in names else None,
        contexts=rq.contexts[: names.count("cx")],
        user_information="user" in names,
    )


def _received(peer: RawPeer) -> tuple:
    """What the server answered, in the shape of :meth:`RqCase.expected`."""
    answer = peer.receive()
    if answer is None:
        return ("CLOSE",)
    if isinstance(answer, A_ABORT):
        return ("ABORT", answer.source, answer.reason)
    if isinstance(answer, A_ASSOCIATE_RJ):
        return ("RJ", answer.result, answer.source, answer.reason)
    assert isinstance(answer, A_ASSOCIATE_AC), answer
    return (
        "AC",
        tuple(
            (cx.context_id, cx.result, cx.transfer_syntax if cx.result == 0 else None)
            for cx in answer.presentation_contexts
        ),
    )


def _closed(peer: RawPeer) -> bool:
    return peer.receive() is None


syntaxes = st.lists(
    st.sampled_from(
        [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.50"]
    ),
    min_size=1,
    max_size=3,
    unique=True,
).map(tuple)
abstracts = st.sampled_from(
    [VERIFICATION, STORAGE_COMMITMENT_PUSH_MODEL, SECONDARY_CAPTURE, UNKNOWN_UID]
)
RQ_MUTATIONS = [
    "protocol-version", "application-context", "drop-application-context", "called", "calling",
    "non-ascii-title", "contexts", "context-without-syntaxes", "max-length", "drop-max-length",
    "extra-sub-items", "drop-user-information", "cut", "oversized-length", "other-pdu-first",
]  # fmt: skip
RQ_MUTATION_WEIGHTS = [
    *RQ_MUTATIONS, "called", "calling", "contexts", "contexts", "protocol-version",
    "extra-sub-items", "max-length", "other-pdu-first",
]  # fmt: skip


@st.composite
def rq_case(draw) -> RqCase:
    case = RqCase(AssociateRQ())
    mutations = draw(st.lists(st.sampled_from(RQ_MUTATION_WEIGHTS), max_size=3, unique=True))
    for mutation in mutations:
        rq = case.rq
        if mutation == "protocol-version":
            rq = replace(rq, protocol_version=draw(st.integers(0, 0xFFFF)))
        elif mutation == "application-context":
            rq = replace(rq, application_context=draw(st.sampled_from([UNKNOWN_UID, "1.2.3"])))
        elif mutation == "drop-application-context":
            rq = replace(rq, application_context=None)
        elif mutation in ("called", "calling"):
            title = draw(st.text("ABCDEFGHIJ_- 0123456789", min_size=1, max_size=16)).encode()
            rq = replace(rq, **{mutation: title})
        elif mutation == "non-ascii-title":
            rq = replace(rq, **{draw(st.sampled_from(["called", "calling"])): b"FUZZ\xe9"})
        elif mutation == "contexts":
            drawn = draw(st.lists(st.tuples(abstracts, syntaxes), min_size=0, max_size=5))
            rq = replace(rq, contexts=[Context(2 * n + 1, a, s) for n, (a, s) in enumerate(drawn)])
        elif mutation == "context-without-syntaxes" and rq.contexts:
            n = draw(st.integers(0, len(rq.contexts) - 1))
            contexts = list(rq.contexts)
            if draw(st.booleans()):
                contexts[n] = replace(contexts[n], syntaxes=())
            else:
                contexts[n] = replace(contexts[n], abstract=None)
            rq = replace(rq, contexts=contexts)
        elif mutation == "max-length":
            rq = replace(
                rq, max_length=draw(st.sampled_from([0, 1, 6, 7, 100, MAX_PDU, 0xFFFFFFFF]))
            )
        elif mutation == "drop-max-length":
            rq = replace(rq, max_length=None)
        elif mutation == "extra-sub-items":
            rq = replace(rq, extra_sub_items=True)
        elif mutation == "drop-user-information":
            rq = replace(rq, user_information=False)
        case = replace(case, rq=rq)
        if mutation == "cut":
            case = replace(case, cut=draw(st.integers(0, len(case.body()) - 1)))
        elif mutation == "oversized-length":
            case = replace(case, lying_length=draw(st.integers((1 << 20) + 1, 0xFFFFFFFF)))
        elif mutation == "other-pdu-first":
            case = replace(
                case, first_pdu_type=draw(st.sampled_from([0, 2, 3, 4, 5, 6, 7, 7, 8, 0xFF]))
            )
    case.mutations = tuple(mutations)
    return case


@settings(max_examples=RQ_EXAMPLES, **FUZZ)
@given(case=rq_case())
def test_association_request(server, case: RqCase) -> None:
    expected = case.expected()
    peer = RawPeer.connect(server.port)
    peer.sock.settimeout(2)
    try:
        peer.send(case.wire())
        got = _received(peer)
        outcome = expected[0]
        label = "AC" if outcome == "AC" else " ".join(map(str, expected))
        event(f"A-ASSOCIATE-RQ -> {label}")
        target(float(len(case.mutations)), label="mutations applied")
        assert got == expected, case
        OUTCOMES[f"rq {label}"] += 1
        if outcome in ("RJ", "ABORT"):
            assert _closed(peer), "the server kept the connection open"
        if outcome == "AC":
            peer.send(pdu(0x05, bytes(4)))  # A-RELEASE-RQ: answered, then closed
            assert isinstance(peer.receive(), A_RELEASE_RP)
            OUTCOMES["rq released"] += 1
    finally:
        peer.close()


# -- P-DATA on an established association -------------------------------------------------------

VALID_RQ = RqCase(AssociateRQ()).wire()


def echo_command(message_id: int = 7) -> bytes:
    command = CEchoRq().command()
    command[0x0110] = message_id
    return encode_command_set(command)


def action_command(message_id: int = 9) -> bytes:
    command = NActionRq(STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE, 1).command()
    command[0x0110] = message_id
    return encode_command_set(command)


def pdv(context_id: int, header: int, data: bytes, length: int | None = None) -> bytes:
    return (
        struct.pack(">LBB", len(data) + 2 if length is None else length, context_id, header) + data
    )


@dataclass
class PDataCase:
    request: str  # echo, action, unknown-command
    context_id: int
    pdvs: list[bytes]
    expected: tuple
    mutations: tuple[str, ...] = ()
    pdu_length: int | None = None


P_DATA_MUTATIONS = [
    "unaccepted-context", "data-first", "pdv-length-short", "pdv-length-over",
    "reserved-bits", "fragmented-command", "separate-pdus", "truncated-command",
    "oversized-pdu", "empty-p-data", "unknown-command", "data-on-other-context",
    "no-command-field",
]  # fmt: skip


@st.composite
def p_data_case(draw) -> PDataCase:
    request = draw(st.sampled_from(["echo", "action"]))
    message_id = draw(st.integers(1, 0xFFFF))
    context_id = 1 if request == "echo" else 3
    command = echo_command(message_id) if request == "echo" else action_command(message_id)
    data_set = b"\x08\x00\x95\x11\x04\x00" + b"1.2\x00"  # any bytes: the stub handler answers
    mutation = draw(st.one_of(st.none(), st.sampled_from(P_DATA_MUTATIONS)))
    status = 0x0000
    pdvs = [pdv(context_id, 0x03, command)]
    if request == "action":
        pdvs.append(pdv(context_id, 0x02, data_set))
    answer: tuple = ("RSP", status, message_id)
    abort = ("ABORT", 2, 6)
    length = None
    if mutation == "unaccepted-context":
        bad = draw(st.sampled_from([0, 2, 5, 255]))
        pdvs[0] = pdv(bad, 0x03, command)
        answer = abort
    elif mutation == "data-first":
        pdvs = [pdv(context_id, 0x02, data_set), *pdvs]
        answer = abort  # a data set fragment without its command set
    elif mutation == "pdv-length-short":
        pdvs[0] = pdv(context_id, 0x03, command, length=draw(st.integers(0, 1)))
        answer = abort
    elif mutation == "pdv-length-over":
        last = pdvs[-1]
        extra = draw(st.integers(1, 500))
        pdvs[-1] = pdv(context_id, last[5], last[6:], length=len(last) - 4 + extra)
        answer = abort
    elif mutation == "reserved-bits":  # bits 2-7 are reserved: ignored
        bits = draw(st.integers(1, 63)) << 2
        pdvs[0] = pdv(context_id, 0x03 | bits, command)
    elif mutation == "fragmented-command":
        cut = draw(st.integers(1, len(command) - 1))
        first, rest = pdv(context_id, 0x01, command[:cut]), pdv(context_id, 0x03, command[cut:])
        pdvs = [first, rest, *pdvs[1:]]
    elif mutation == "truncated-command":
        # cut inside an element (never at a boundary): the command set cannot be decoded
        boundaries = _command_boundaries(command)
        cut = draw(st.integers(1, len(command) - 1).filter(lambda c: c not in boundaries))
        pdvs[0] = pdv(context_id, 0x03, command[:cut])
        answer = abort
    elif mutation == "no-command-field":
        pdvs[0] = pdv(context_id, 0x03, _without_command_field(command))
        answer = abort
    elif mutation == "oversized-pdu":
        length = MAX_PDU + draw(st.integers(1, 1 << 20))
        answer = abort  # longer than the Maximum Length we advertised: refused from its header
    elif mutation == "empty-p-data":
        pdvs = []
        answer = abort
    elif mutation == "unknown-command":  # C-FIND-RQ on the Verification context
        found = decode_command_set(command)
        found[0x0100] = 0x0020
        found[0x0800] = 0x0101
        pdvs = [pdv(context_id, 0x03, encode_command_set(found))]
        answer = ("RSP", 0x0211, message_id)  # unrecognised operation
    elif mutation == "data-on-other-context" and request == "action":
        pdvs[1] = pdv(1, 0x02, data_set)
        answer = abort
    if mutation == "separate-pdus":
        length = -1  # each PDV in a P-DATA-TF of its own
    return PDataCase(request, context_id, pdvs, answer, (mutation or "none",), length)


def _command_boundaries(command: bytes) -> set[int]:
    offset, found = 0, {0}
    while offset < len(command):
        offset += 8 + struct.unpack_from("<L", command, offset + 4)[0]
        found.add(offset)
    return found


def _without_command_field(command: bytes) -> bytes:
    decoded = decode_command_set(command)
    del decoded[0x0100]
    out = b""
    for element in sorted(decoded):
        if element == 0:
            continue
        value = decoded[element]
        raw = struct.pack("<H", value) if isinstance(value, int) else value.encode()
        if len(raw) % 2:
            raw += b"\x00"
        out += struct.pack("<HHL", 0, element, len(raw)) + raw
    return struct.pack("<HHLL", 0, 0, 4, len(out)) + out


def _response(peer: RawPeer) -> tuple:
    answer = peer.receive()
    if answer is None:
        return ("CLOSE",)
    if isinstance(answer, A_ABORT):
        return ("ABORT", answer.source, answer.reason)
    assert isinstance(answer, P_DATA_TF), answer
    command = decode_command_set(b"".join(bytes(v.data) for v in answer.items if v.is_command))
    return ("RSP", command[STATUS], command[0x0120])


@settings(max_examples=P_DATA_EXAMPLES, **FUZZ)
@given(case=p_data_case())
def test_p_data(server, case: PDataCase) -> None:
    peer = RawPeer.connect(server.port)
    peer.sock.settimeout(2)
    try:
        peer.send(VALID_RQ)
        assert isinstance(peer.receive(), A_ASSOCIATE_AC)
        if case.pdu_length == -1:  # each PDV in a P-DATA-TF of its own
            peer.send(b"".join(pdu(0x04, p) for p in case.pdvs))
        else:
            body = b"".join(case.pdvs)
            if case.pdu_length is not None:
                peer.send(pdu(0x04, body[:64], case.pdu_length))
            else:
                peer.send(pdu(0x04, body))
        got = _response(peer)
        label = f"{case.expected[0]} {case.expected[1]:#06x}"
        event(f"P-DATA -> {label}")
        target(float(sum(map(len, case.pdvs))), label="PDV bytes")
        assert got == case.expected, case
        OUTCOMES[f"p-data {label}"] += 1
        if case.expected[0] == "ABORT":
            assert _closed(peer), "the server kept the connection open"
        else:
            peer.send(pdu(0x05, bytes(4)))
            assert isinstance(peer.receive(), A_RELEASE_RP)
    finally:
        peer.close()


def test_spread() -> None:
    """The outcomes were spread (the spread is part of the test) and every example sent."""
    if not OUTCOMES:
        pytest.skip("the fuzz tests did not run")
    print(f"\nupper layer outcomes: {dict(sorted(OUTCOMES.items()))}")
    least = {
        "rq AC": 120, "rq RJ 1 1 1": 2, "rq RJ 1 1 2": 30, "rq RJ 1 2 2": 4,
        "rq ABORT 2 6": 150, "rq ABORT 2 2": 10, "rq ABORT 2 1": 10, "rq CLOSE": 1,
        "p-data RSP 0x0000": 200, "p-data RSP 0x0211": 5, "p-data ABORT 0x0002": 150,
    }  # fmt: skip
    for outcome, n in least.items():
        assert OUTCOMES[outcome] >= n, (outcome, OUTCOMES)
    sent = sum(v for k, v in OUTCOMES.items() if k.startswith("rq ") and k != "rq released")
    assert sent >= RQ_EXAMPLES
    assert sum(v for k, v in OUTCOMES.items() if k.startswith("p-data ")) >= P_DATA_EXAMPLES
