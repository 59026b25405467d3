"""Structure-aware fuzzing of the SCP (hypothesis): N-ACTION Action Information and C-STORE.

Every example starts from a valid request, applies mutations drawn by hypothesis, and computes
the outcome the SCP must give *from what was generated* (an oracle of its own, from PS3.4 J.3
and the SCP's documented rules: it never calls the SCP's validators): the N-ACTION status
and, when it is 0000H, the N-EVENT-REPORT it must deliver (event type, Referenced and Failed
SOP Sequences, each Failure Reason); the C-STORE status and the exact bytes then stored. The
bytes go on the wire through stgcmt's own requester with the Action Information / data set
encoded here by hand, so the mutations reach the SCP exactly as drawn. Every example is sent
(counted), and the spread of outcomes is part of the test: each status must be reached a
minimum number of times.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import struct
from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from stgcmt import ul
from stgcmt.config import PeerProfile, RemoteAE, ScpConfig
from stgcmt.dicom.commitment import (
    CommitmentReport,
    CommitmentRequest,
    FailedReference,
    Reference,
)
from stgcmt.dicom.part10 import file_meta
from stgcmt.dicom.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.storage.instances import sha256_of
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.ul.messages import CStoreRq, NActionRq

from support.common import CT_IMAGE, FAST_RETRY, LOCALHOST, SECONDARY_CAPTURE, free_port

MAX_REFERENCES = 12
MAX_DATA_SET = 48 * 1024
SCP_AET = "STGCMT_SCP"
N_ACTION_EXAMPLES = 1000
C_STORE_EXAMPLES = 1000
FUZZ = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
# Statuses every run must reach at least this often (the spread is part of the test).
N_ACTION_SPREAD = {
    0x0000: 250, 0x0115: 200, 0x0212: 40, 0x0213: 40, 0x0117: 15, 0x0118: 15, 0x0123: 30,
}  # fmt: skip
FAILURE_REASON_SPREAD = {0x0112: 200, 0x0119: 60, 0x0122: 200, 0x0131: 100}
C_STORE_SPREAD = {0x0000: 180, 0xA900: 200, 0xC000: 180, 0x0122: 25, 0xA700: 15}

STORED = [f"1.2.826.0.1.3680043.10.1.{n}" for n in range(6)]
"""Secondary Capture instances the archive holds before fuzzing starts."""
PINNED = [f"1.2.826.0.1.3680043.10.2.{n}" for n in range(2)]
"""Transaction UIDs kept active throughout (their reports cannot be delivered)."""

N_ACTION_OUTCOMES: Counter[str] = Counter()
C_STORE_OUTCOMES: Counter[str] = Counter()
SENT: Counter[str] = Counter()
_serial = itertools.count(1)


def serial() -> str:
    """A fresh UID component, always 8 digits (a replayed example must draw the same sizes):
    a Transaction UID is never reused by accident (a transaction just reported may still be
    active for a moment, which would make it a duplicate), a missing instance stays missing."""
    return f"{10_000_000 + next(_serial)}"


# -- encoding by hand (little endian), so every mutation reaches the wire as drawn ----------

LONG_VRS = {b"OB", b"OW", b"SQ", b"UN", b"UT"}
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
TRANSACTION_UID, REFERENCED_SOP_SEQUENCE = 0x00081195, 0x00081199
REFERENCED_CLASS, REFERENCED_INSTANCE = 0x00081150, 0x00081155


def tag_bytes(tag: int) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def element(tag: int, vr: bytes, value: bytes, implicit: bool, *, length: int | None = None):
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB", b"UN") else b" "
    n = len(value) if length is None else length
    if implicit:
        return tag_bytes(tag) + struct.pack("<I", n) + value
    if vr in LONG_VRS:
        return tag_bytes(tag) + vr + b"\x00\x00" + struct.pack("<I", n) + value
    return tag_bytes(tag) + vr + struct.pack("<H", n) + value


def delimiter(tag: int) -> bytes:
    return tag_bytes(tag) + b"\x00\x00\x00\x00"


def sequence(tag: int, items: list[bytes], implicit: bool, undefined: bool, item_undefined):
    body = b"".join(
        tag_bytes(ITEM) + struct.pack("<I", UNDEFINED) + i + delimiter(ITEM_END)
        if item_undefined
        else tag_bytes(ITEM) + struct.pack("<I", len(i)) + i
        for i in items
    )
    if undefined:
        return element(tag, b"SQ", body + delimiter(SEQUENCE_END), implicit, length=UNDEFINED)
    return element(tag, b"SQ", body, implicit)


# -- UIDs, each valid or not by construction --------------------------------------------------


@dataclass(frozen=True)
class Uid:
    raw: bytes
    valid: bool
    kind: str

    @property
    def text(self) -> str:
        """The value as read back (padding stripped)."""
        return self.raw.decode("ascii", "replace").strip("\x00 ")


def valid_uid(base: str, grow: bool = True) -> st.SearchStrategy[Uid]:
    """Valid spellings of a UID rooted at ``base``: as is, trailing NUL or space padding, or
    (``grow``) grown to exactly 64 characters (the longest allowed)."""
    kinds = ["plain", "nul", "space", "max64"] if grow else ["plain", "nul", "space"]
    return st.sampled_from(kinds).map(
        lambda kind: Uid(
            {
                "plain": base.encode(),
                "nul": base.encode() + b"\x00",
                "space": base.encode() + b" ",
                "max64": (base + "." + "9" * (63 - len(base))).encode(),
            }[kind],
            True,
            kind,
        )
    )


INVALID_UIDS = {
    "too-long": ("1.2." + "3" * 61).encode(),  # 65 characters
    "leading-zero": b"1.2.03.4",
    "empty-component": b"1.2..4",
    "trailing-dot": b"1.2.3.",
    "letters": b"1.2.3a.4",
    "non-ascii": "1.2.3.\u00e9".encode(),
    "one-component": b"12345",
    "multi-valued": b"1.2.3\\1.2.4",
    "inner-space": b"1.2. 3",
    "empty": b"",
}
invalid_uid = st.sampled_from(sorted(INVALID_UIDS)).map(
    lambda kind: Uid(INVALID_UIDS[kind], False, kind)
)

# -- the archive -------------------------------------------------------------------------------


@dataclass
class Archive:
    scp: StorageCommitmentSCP
    associations: dict[bool, ul.Association]  # by implicit VR
    reports: queue.Queue[tuple[int | None, CommitmentReport]]
    stored: list[str]  # Secondary Capture instances held
    checksums: dict[str, str]
    pinned: list[str]  # Transaction UIDs kept active (their reports cannot be delivered)
    extra_stored: dict[str, str] = field(default_factory=dict)


def _store_seed(association: ul.Association, uid: str) -> None:
    data = DataSetSpec(uid).encode(False)
    context = association.link.context(SECONDARY_CAPTURE, EXPLICIT_VR_LITTLE_ENDIAN)
    status = association.link.exchange(context, CStoreRq(SECONDARY_CAPTURE, uid).command(), [data])
    assert status == 0


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz-archive")
    fuzzer = RemoteAE("FUZZER", LOCALHOST, free_port(), PeerProfile(report_assoc="same"))
    pinner = RemoteAE("PINNER", LOCALHOST, free_port())  # nobody listens: reports stay pending
    config = ScpConfig(
        aet=SCP_AET,
        bind=LOCALHOST,
        port=0,
        data_dir=data / "scp",
        remotes=(fuzzer, pinner),
        retry=FAST_RETRY,
        max_references=MAX_REFERENCES,
        max_dataset_bytes=MAX_DATA_SET,
    )
    scp = StorageCommitmentSCP(config).start()
    reports: queue.Queue[tuple[int | None, CommitmentReport]] = queue.Queue()

    def on_report(link, report: ul.EventReport) -> int:
        reports.put((report.event_type_id, report.report()))
        return 0

    handlers = ul.Handlers(n_event_report=on_report)
    storage = [
        (SECONDARY_CAPTURE, EXPLICIT_VR_LITTLE_ENDIAN),
        (CT_IMAGE, EXPLICIT_VR_LITTLE_ENDIAN),
        (SECONDARY_CAPTURE, IMPLICIT_VR_LITTLE_ENDIAN),
    ]
    associations = {
        implicit: ul.open_association(
            "FUZZER",
            RemoteAE(SCP_AET, LOCALHOST, scp.port),
            ul.ContextPlan(
                storage=storage,
                commitment="scu",
                echo=True,
                commitment_syntaxes=(syntax,),
            ),
            handlers=handlers,
        )
        for implicit, syntax in (
            (True, IMPLICIT_VR_LITTLE_ENDIAN),
            (False, EXPLICIT_VR_LITTLE_ENDIAN),
        )
    }
    stored = list(STORED)
    for uid in stored:
        _store_seed(associations[False], uid)
    pinned = list(PINNED)
    with ul.open_association(
        "PINNER", RemoteAE(SCP_AET, LOCALHOST, scp.port), ul.ContextPlan(commitment="scu")
    ) as pin:
        for uid in pinned:
            assert pin.n_action(_request(uid, [Reference(SECONDARY_CAPTURE, stored[0])])) == 0
    checksums = {uid: sha256_of(scp.store.path_for(uid)) for uid in stored}
    yield Archive(scp, associations, reports, stored, checksums, pinned)
    for association in associations.values():
        association.release()
    scp.stop()


def _request(uid: str, refs: list[Reference]) -> CommitmentRequest:
    return CommitmentRequest(uid, refs)


def _send(archive: Archive, implicit: bool, abstract: str, syntax: str, command, data: bytes):
    association = archive.associations[implicit]
    context = association.link.context(abstract, syntax)
    assert context is not None, (abstract, syntax)
    status = association.link.exchange(context, command, [data])
    assert status is not None, "no response: the example did not get an answer"
    return status


def _intact(archive: Archive) -> None:
    for uid, digest in archive.checksums.items():
        assert sha256_of(archive.scp.store.path_for(uid)) == digest, uid


# -- N-ACTION ---------------------------------------------------------------------------------

SUPPORTED = (SECONDARY_CAPTURE, CT_IMAGE)
NON_STORAGE = (VERIFICATION, STORAGE_COMMITMENT_PUSH_MODEL, "1.2.826.0.1.3680043.10.99")


@dataclass
class RefSpec:
    kind: str  # stored, missing, conflict, non-storage
    sop_class: Uid | None  # None: the element is dropped
    sop_instance: Uid | None
    vr: bytes = b"UI"
    extra: bool = False

    def encode(self, implicit: bool) -> bytes:
        parts = []
        if self.sop_class is not None:
            parts.append(element(REFERENCED_CLASS, self.vr, self.sop_class.raw, implicit))
        if self.sop_instance is not None:
            parts.append(element(REFERENCED_INSTANCE, self.vr, self.sop_instance.raw, implicit))
        if self.extra:  # a private element after the UIDs
            parts.append(element(0x00110010, b"LO", b"FUZZ", implicit))
            parts.append(element(0x00111001, b"OB", b"\x01\x02\x03\x04", implicit))
        return b"".join(parts)

    @property
    def valid(self) -> bool:
        return all(u is not None and u.valid for u in (self.sop_class, self.sop_instance))

    def reason(self, archive: Archive) -> int:
        """The Failure Reason (0: committed) PS3.4 J.3.3.1.1 and the archive's store call for."""
        assert self.sop_class is not None and self.sop_instance is not None
        if self.sop_class.text not in SUPPORTED:
            return 0x0122  # not a storage SOP class we support
        if self.sop_instance.text not in STORED:
            return 0x0112  # no such object instance
        if self.sop_class.text != SECONDARY_CAPTURE:
            return 0x0119  # class-instance conflict
        return 0


@dataclass
class ActionCase:
    implicit: bool
    tuids: list[Uid]  # empty: dropped; two: the element appears twice
    refs: list[RefSpec] | None  # None: the sequence is dropped
    command: tuple[str, str, int | None] = (
        STORAGE_COMMITMENT_PUSH_MODEL,
        STORAGE_COMMITMENT_INSTANCE,
        1,
    )
    tuid_vr: bytes = b"UI"
    sequence_undefined: bool = False
    items_undefined: bool = False
    extras: bool = False
    padding: int = 0  # bytes of a private OB element at the end (to pass the data set cap)
    cut: int | None = None  # truncate the encoding to this many bytes
    mutations: tuple[str, ...] = ()

    def elements(self) -> list[bytes]:
        """The top-level elements, in tag order (private ones after the sequence)."""
        out = []
        if self.extras:
            out.append(element(0x00080054, b"AE", b"SOMEONE", self.implicit))
        for uid in self.tuids:
            out.append(element(TRANSACTION_UID, self.tuid_vr, uid.raw, self.implicit))
        if self.refs is not None:
            items = [r.encode(self.implicit) for r in self.refs]
            out.append(
                sequence(
                    REFERENCED_SOP_SEQUENCE,
                    items,
                    self.implicit,
                    self.sequence_undefined,
                    self.items_undefined,
                )
            )
        if self.extras:
            out.append(element(0x00090010, b"LO", b"FUZZ CREATOR", self.implicit))
            out.append(element(0x00091001, b"UN", bytes(range(7)), self.implicit))
            out.append(element(0x00100020, b"LO", b"PATIENT", self.implicit))
        if self.padding:
            out.append(element(0x00130010, b"LO", b"PADDING", self.implicit))
            out.append(element(0x00131000, b"OB", bytes(self.padding), self.implicit))
        return out

    def encode(self) -> bytes:
        data = b"".join(self.elements())
        return data if self.cut is None else data[: self.cut]

    def expected(self, archive: Archive) -> tuple[int, CommitmentReport | None]:
        """(N-ACTION status, the report then due): PS3.4 J.3.2 and the SCP's rules."""
        if len(self.encode()) > MAX_DATA_SET:
            return 0x0213, None  # resource limitation: over the archive's data set cap
        sop_class, sop_instance, action = self.command
        if sop_class != STORAGE_COMMITMENT_PUSH_MODEL:
            return 0x0118, None  # no such SOP class
        if sop_instance != STORAGE_COMMITMENT_INSTANCE:
            return 0x0117, None  # invalid object instance
        if action != 1:
            return 0x0123, None  # no such action type
        case = self
        if self.cut is not None:
            # Only a cut between top-level elements leaves a well-formed data set (the
            # elements before the cut); anything else is a malformed encoding.
            boundaries = list(itertools.accumulate(len(e) for e in self.elements()))
            cut = min(self.cut, boundaries[-1] if boundaries else 0)  # past the end: no cut
            if cut and cut not in boundaries:
                return 0x0212, None  # mistyped argument: cannot be decoded
            kept = boundaries.index(cut) + 1 if cut else 0
            case = _kept_elements(self, kept)
        return case._semantic(archive)

    def _semantic(self, archive: Archive) -> tuple[int, CommitmentReport | None]:
        tuid = self.tuids[-1] if self.tuids else None  # of two, the last one read counts
        if tuid is None or not tuid.valid:
            return 0x0115, None  # invalid argument value: missing or not a UID
        if not self.refs:
            return 0x0115, None  # Referenced SOP Sequence missing or empty
        if len(self.refs) > MAX_REFERENCES:
            return 0x0213, None  # resource limitation
        if not all(r.valid for r in self.refs):
            return 0x0115, None
        report = CommitmentReport(tuid.text, retrieve_ae_title=SCP_AET)
        for ref in self.refs:
            assert ref.sop_class is not None and ref.sop_instance is not None
            reason = 0x0131 if tuid.text in PINNED else ref.reason(archive)
            pair = (ref.sop_class.text, ref.sop_instance.text)
            if reason:
                report.failed.append(FailedReference(*pair, reason))
            else:
                report.committed.append(Reference(*pair))
        return 0x0000, report


def _kept_elements(case: ActionCase, kept: int) -> ActionCase:
    """The case holding only its first ``kept`` top-level elements."""
    order = (["retrieve"] if case.extras else []) + ["tuid"] * len(case.tuids)
    order += ["refs"] if case.refs is not None else []
    names = order[:kept]
    return replace(
        case,
        tuids=case.tuids[: names.count("tuid")],
        refs=case.refs if "refs" in names else None,
        cut=None,
    )


@st.composite
def reference(draw) -> RefSpec:
    kind = draw(st.sampled_from(["stored", "stored", "missing", "conflict", "non-storage"]))
    stored = draw(st.sampled_from(STORED))
    missing = f"1.2.826.0.1.3680043.10.3.{serial()}"
    sop_class, sop_instance = {
        "stored": (SECONDARY_CAPTURE, stored),
        "missing": (draw(st.sampled_from(SUPPORTED)), missing),
        "conflict": (CT_IMAGE, stored),
        "non-storage": (
            draw(st.sampled_from(NON_STORAGE)),
            draw(st.sampled_from([stored, missing])),
        ),
    }[kind]
    return RefSpec(kind, draw(valid_uid(sop_class)), draw(valid_uid(sop_instance)))


ACTION_MUTATIONS = [
    "drop-tuid", "duplicate-tuid", "empty-tuid", "invalid-tuid", "pinned-tuid",
    "invalid-ref-uid", "drop-ref-uid", "tuid-vr", "ref-vr", "truncate", "lying-length",
    "undefined-sequence", "undefined-items", "extras", "item-extras", "too-many",
    "exactly-max", "drop-sequence", "empty-sequence", "command", "oversized",
]  # fmt: skip
ACTION_MUTATION_WEIGHTS = [*ACTION_MUTATIONS, "too-many", "command", "command", "pinned-tuid"]


@st.composite
def action_case(draw) -> ActionCase:
    implicit = draw(st.booleans())
    tuid = draw(valid_uid(f"1.2.826.0.1.3680043.10.4.{serial()}"))
    refs = draw(st.lists(reference(), min_size=1, max_size=6))
    case = ActionCase(implicit, [tuid], refs)
    mutations = draw(st.lists(st.sampled_from(ACTION_MUTATION_WEIGHTS), max_size=3, unique=True))
    for mutation in mutations:
        case = draw(_mutate(case, mutation))
    case.mutations = tuple(mutations)
    return case


@st.composite
def _mutate(draw, case: ActionCase, mutation: str) -> ActionCase:
    refs = list(case.refs) if case.refs is not None else None
    if mutation == "drop-tuid":
        return replace(case, tuids=[])
    if mutation == "duplicate-tuid":
        second = draw(st.one_of(valid_uid(f"1.2.826.0.1.3680043.10.5.{serial()}"), invalid_uid))
        order = draw(st.booleans())
        return replace(case, tuids=[*case.tuids, second] if order else [second, *case.tuids])
    if mutation == "empty-tuid":
        return replace(case, tuids=[Uid(b"", False, "empty")])
    if mutation == "invalid-tuid":
        return replace(case, tuids=[draw(invalid_uid)])
    if mutation == "pinned-tuid":
        return replace(case, tuids=[draw(valid_uid(draw(st.sampled_from(PINNED)), grow=False))])
    if mutation in ("invalid-ref-uid", "drop-ref-uid", "ref-vr", "item-extras") and refs:
        n = draw(st.integers(0, len(refs) - 1))
        which = draw(st.sampled_from(["sop_class", "sop_instance"]))
        if mutation == "invalid-ref-uid":
            refs[n] = replace(refs[n], **{which: draw(invalid_uid)})
        elif mutation == "drop-ref-uid":
            refs[n] = replace(refs[n], **{which: None})
        elif mutation == "ref-vr" and not case.implicit:
            refs[n] = replace(refs[n], vr=draw(st.sampled_from([b"LO", b"SH", b"UN"])))
        else:
            refs[n] = replace(refs[n], extra=True)
        return replace(case, refs=refs)
    if mutation == "tuid-vr" and not case.implicit:
        return replace(case, tuid_vr=draw(st.sampled_from([b"LO", b"SH", b"UN"])))
    if mutation == "truncate":
        return replace(case, cut=draw(st.integers(0, max(0, len(case.encode()) - 1))))
    if mutation == "lying-length":  # the last element claims more than there is
        return replace(case, cut=len(case.encode()) - draw(st.integers(1, 7)))
    if mutation == "undefined-sequence":
        return replace(case, sequence_undefined=True)
    if mutation == "undefined-items":
        return replace(case, items_undefined=True)
    if mutation == "extras":
        return replace(case, extras=True)
    if mutation == "too-many" and refs:
        more = draw(st.lists(reference(), min_size=MAX_REFERENCES, max_size=24))
        return replace(case, refs=refs + more)
    if mutation == "exactly-max" and refs:
        more = [draw(reference()) for _ in range(MAX_REFERENCES - len(refs))]
        return replace(case, refs=refs + more)
    if mutation == "oversized":
        return replace(case, padding=MAX_DATA_SET + draw(st.integers(-64, 64)) * 2)
    if mutation == "drop-sequence":
        return replace(case, refs=None)
    if mutation == "empty-sequence":
        return replace(case, refs=[])
    if mutation == "command":
        sop_class, sop_instance, action = case.command
        field_ = draw(st.sampled_from(["class", "instance", "action", "no-action"]))
        if field_ == "class":
            sop_class = draw(st.sampled_from([VERIFICATION, SECONDARY_CAPTURE, "1.2.3"]))
        elif field_ == "instance":
            sop_instance = draw(st.sampled_from(["1.2.3.4", STORAGE_COMMITMENT_PUSH_MODEL, ""]))
        elif field_ == "action":
            action = draw(st.sampled_from([0, 2, 0xFFFF]))
        else:
            action = None
        return replace(case, command=(sop_class, sop_instance, action))
    return case


def _action_command(case: ActionCase) -> dict:
    sop_class, sop_instance, action = case.command
    return NActionRq(sop_class, sop_instance, action).command()


@settings(max_examples=N_ACTION_EXAMPLES, **FUZZ)
@given(case=action_case())
def test_n_action(archive, case: ActionCase) -> None:
    status, report = case.expected(archive)
    syntax = IMPLICIT_VR_LITTLE_ENDIAN if case.implicit else EXPLICIT_VR_LITTLE_ENDIAN
    data = case.encode()
    command = _action_command(case)
    got = _send(archive, case.implicit, STORAGE_COMMITMENT_PUSH_MODEL, syntax, command, data)
    SENT["n-action"] += 1
    event(f"N-ACTION 0x{status:04X}")
    target(float(len(case.mutations)), label="mutations applied")
    assert got == status, (case.mutations, case)
    N_ACTION_OUTCOMES[f"0x{status:04X}"] += 1
    if report is None:
        return
    event_type, received = archive.reports.get(timeout=10)
    assert received == report, case.mutations
    assert event_type == (2 if report.failed else 1)
    for failed in report.failed:
        N_ACTION_OUTCOMES[f"reason 0x{failed.failure_reason:04X}"] += 1
        event(f"Failure Reason 0x{failed.failure_reason:04X}")
    N_ACTION_OUTCOMES["committed"] += len(report.committed)


def test_n_action_spread(archive) -> None:
    """Every status (and Failure Reason) was reached often enough, every example was sent."""
    if not SENT["n-action"]:
        pytest.skip("test_n_action did not run")
    assert archive.reports.empty(), "a report nobody expected"
    _intact(archive)
    print(
        f"\nN-ACTION outcomes ({SENT['n-action']} sent): {dict(sorted(N_ACTION_OUTCOMES.items()))}"
    )
    assert SENT["n-action"] >= N_ACTION_EXAMPLES
    for status, least in N_ACTION_SPREAD.items():
        assert N_ACTION_OUTCOMES[f"0x{status:04X}"] >= least, (status, N_ACTION_OUTCOMES)
    for reason, least in FAILURE_REASON_SPREAD.items():
        assert N_ACTION_OUTCOMES[f"reason 0x{reason:04X}"] >= least, (reason, N_ACTION_OUTCOMES)
    assert N_ACTION_OUTCOMES["committed"] >= 150


# -- C-STORE ----------------------------------------------------------------------------------


@dataclass
class DataSetSpec:
    """A small Secondary Capture data set, element by element (tag order)."""

    sop_instance: str
    sop_class: str = SECONDARY_CAPTURE
    class_value: bytes | None = None  # raw override of (0008,0016); b"" empty
    instance_value: bytes | None = None
    drop: frozenset[int] = frozenset()
    pixels: int = 64
    patient_id: bytes = b"PAT001"

    def elements(self, implicit: bool) -> list[tuple[int, bytes]]:
        sop_class = self.sop_class.encode() if self.class_value is None else self.class_value
        instance = (
            self.sop_instance.encode() if self.instance_value is None else self.instance_value
        )
        values = [
            (0x00080016, b"UI", sop_class),
            (0x00080018, b"UI", instance),
            (0x00080060, b"CS", b"OT"),
            (0x00100010, b"PN", b"Fuzz^Patient"),
            (0x00100020, b"LO", self.patient_id),
            (0x0020000D, b"UI", b"1.2.826.0.1.3680043.10.7.1"),
            (0x0020000E, b"UI", b"1.2.826.0.1.3680043.10.7.2"),
            (0x00280002, b"US", struct.pack("<H", 1)),
            (0x00280004, b"CS", b"MONOCHROME2"),
            (0x00280010, b"US", struct.pack("<H", 1)),
            (0x00280011, b"US", struct.pack("<H", self.pixels)),
            (0x00280100, b"US", struct.pack("<H", 8)),
            (0x7FE00010, b"OB", bytes(i % 256 for i in range(self.pixels))),
        ]  # fmt: skip
        return [
            (tag, element(tag, vr, value, implicit))
            for tag, vr, value in values
            if tag not in self.drop
        ]

    def encode(self, implicit: bool) -> bytes:
        return b"".join(e for _, e in self.elements(implicit))


@dataclass
class StoreCase:
    implicit: bool
    spec: DataSetSpec
    command_class: str
    command_instance: str
    context_class: str = SECONDARY_CAPTURE
    cut: int | None = None
    mutations: tuple[str, ...] = ()

    def encode(self) -> bytes:
        data = self.spec.encode(self.implicit)
        return data if self.cut is None else data[: self.cut]

    def expected(self, archive: Archive) -> tuple[int, str]:
        """(C-STORE status, what happens to the store: stored, kept or nothing)."""
        data = self.encode()
        if len(data) > MAX_DATA_SET:
            return 0xA700, "nothing"  # out of resources: over the archive's data set cap
        if not _uid_ok(self.command_class) or not _uid_ok(self.command_instance):
            return 0xC000, "nothing"
        if self.command_class != self.context_class:
            return 0xA900, "nothing"  # not the presentation context's SOP class
        if self.command_class not in SUPPORTED:
            return 0x0122, "nothing"
        identity = self._identity()
        if identity is None:
            return 0xC000, "nothing"  # cannot understand: broken before the identity is read
        for value, expected in zip(
            identity, (self.command_class, self.command_instance), strict=True
        ):
            if value == expected:
                continue
            return (0xC000 if value is None or not _uid_ok(value) else 0xA900), "nothing"
        if self.command_instance in archive.stored or self.command_instance in archive.extra_stored:
            return 0x0000, "kept"  # a duplicate (or a class conflict): the first copy is kept
        return 0x0000, "stored"

    def _identity(self) -> tuple[str | None, str | None] | None:
        """(SOP Class UID, SOP Instance UID) as the data set (maybe cut) holds them, or None if
        the cut breaks an element the SCP must read (up to the first header past the Series
        Instance UID, which is where the scan of the attributes it indexes stops). A data set
        cut after that point is stored as received, with 0000H: the SCP does not parse the rest
        of a data set (it stores bytes), and this pins that so a change is noticed."""
        elements = self.spec.elements(self.implicit)
        end = self.cut if self.cut is not None else sum(len(e) for _, e in elements)
        offset, found = 0, {}
        for tag, encoded in elements:
            if offset >= end:
                break
            if tag > 0x0020000E:
                if end - offset < 8:
                    return None  # its header is cut
                break
            if offset + len(encoded) > end:
                return None  # cut inside the element
            found[tag] = _value_of(encoded, self.implicit)
            offset += len(encoded)
        return found.get(0x00080016), found.get(0x00080018)


def _value_of(encoded: bytes, implicit: bool) -> str | None:
    value = encoded[8:]
    return value.decode("ascii", "replace").strip("\x00 ") or None


def _uid_ok(value: str) -> bool:
    """PS3.5 9.1, written out for the oracle."""
    if not value or len(value) > 64:
        return False
    parts = value.split(".")
    return len(parts) > 1 and all(
        p.isdigit() and p.isascii() and (p == "0" or not p.startswith("0")) for p in parts
    )


STORE_MUTATIONS = [
    "instance-mismatch", "class-mismatch", "invalid-command-uid", "invalid-data-set-uid",
    "drop-identity", "truncate", "unknown-class", "wrong-context", "duplicate", "conflict",
    "oversized", "empty-identity",
]  # fmt: skip
STORE_MUTATION_WEIGHTS = [m for m in STORE_MUTATIONS if m != "oversized"] * 4 + ["oversized"]


@st.composite
def store_case(draw) -> StoreCase:
    implicit = draw(st.booleans())
    uid = f"1.2.826.0.1.3680043.10.6.{serial()}"
    patient = draw(st.text("ABCXYZ0189^ ", min_size=1, max_size=16)).encode()
    spec = DataSetSpec(uid, pixels=draw(st.integers(1, 1024)), patient_id=patient)
    case = StoreCase(implicit, spec, SECONDARY_CAPTURE, uid)
    mutations: list[str] = []
    if draw(st.sampled_from(range(10))) >= 4:  # else a valid C-STORE: stored, as received
        mutations = draw(
            st.lists(st.sampled_from(STORE_MUTATION_WEIGHTS), min_size=1, max_size=2, unique=True)
        )
    for mutation in mutations:
        spec = case.spec
        if mutation == "instance-mismatch":
            spec = replace(spec, instance_value=f"{uid}.9".encode())
        elif mutation == "class-mismatch":
            spec = replace(spec, class_value=CT_IMAGE.encode())
        elif mutation == "invalid-command-uid":
            bad = draw(invalid_uid.filter(lambda u: u.raw.isascii())).raw.decode()
            if draw(st.booleans()):
                case = replace(case, command_class=bad)
            else:
                case = replace(case, command_instance=bad)
        elif mutation == "invalid-data-set-uid":
            bad = draw(invalid_uid).raw
            spec = replace(spec, **{draw(st.sampled_from(["class_value", "instance_value"])): bad})
        elif mutation == "drop-identity":
            spec = replace(spec, drop=spec.drop | {draw(st.sampled_from([0x00080016, 0x00080018]))})
        elif mutation == "empty-identity":
            spec = replace(spec, **{draw(st.sampled_from(["class_value", "instance_value"])): b""})
        elif mutation == "truncate":
            size = len(spec.encode(implicit))
            case = replace(case, cut=draw(st.integers(1, size - 1)))
        elif mutation == "unknown-class":  # on a context for a class that is not storage
            other = draw(st.sampled_from([VERIFICATION, STORAGE_COMMITMENT_PUSH_MODEL]))
            case = replace(case, command_class=other, context_class=other)
            spec = replace(spec, sop_class=other)
        elif mutation == "wrong-context":
            case = replace(case, context_class=CT_IMAGE)
        elif mutation == "duplicate":
            stored = draw(st.sampled_from(STORED))
            case = replace(case, command_instance=stored)
            spec = replace(spec, sop_instance=stored)
        elif mutation == "conflict":  # a stored instance, sent as another class
            stored = draw(st.sampled_from(STORED))
            case = replace(
                case, command_instance=stored, command_class=CT_IMAGE, context_class=CT_IMAGE
            )
            spec = replace(spec, sop_instance=stored, sop_class=CT_IMAGE)
        elif mutation == "oversized":
            spec = replace(spec, pixels=MAX_DATA_SET + draw(st.integers(1, 4096)))
        case = replace(case, spec=spec)
    if case.context_class == CT_IMAGE:  # proposed in Explicit VR Little Endian only
        case = replace(case, implicit=False)
    case.mutations = tuple(mutations)
    return case


@settings(max_examples=C_STORE_EXAMPLES, **FUZZ)
@given(case=store_case())
def test_c_store(archive, case: StoreCase) -> None:
    status, effect = case.expected(archive)
    data = case.encode()
    if case.context_class in SUPPORTED:
        syntax = IMPLICIT_VR_LITTLE_ENDIAN if case.implicit else EXPLICIT_VR_LITTLE_ENDIAN
    else:
        syntax = ""  # whichever the context has: the status comes before the data set is read
    command = CStoreRq(case.command_class, case.command_instance).command()
    got = _send(archive, case.implicit, case.context_class, syntax, command, data)
    SENT["c-store"] += 1
    event(f"C-STORE 0x{status:04X} ({effect})")
    target(float(len(case.mutations)), label="mutations applied")
    assert got == status, (case.mutations, case)
    C_STORE_OUTCOMES[f"0x{status:04X}"] += 1
    C_STORE_OUTCOMES[effect] += 1
    if effect == "stored":  # exactly the bytes received, behind a File Meta of its own
        content = file_meta(case.command_class, case.command_instance, syntax) + data
        assert archive.scp.store.path_for(case.command_instance).read_bytes() == content
        archive.extra_stored[case.command_instance] = hashlib.sha256(content).hexdigest()
    _intact(archive)


def test_c_store_spread(archive) -> None:
    if not SENT["c-store"]:
        pytest.skip("test_c_store did not run")
    for uid, digest in archive.extra_stored.items():
        assert sha256_of(archive.scp.store.path_for(uid)) == digest
    print(f"\nC-STORE outcomes ({SENT['c-store']} sent): {dict(sorted(C_STORE_OUTCOMES.items()))}")
    assert SENT["c-store"] >= C_STORE_EXAMPLES
    for status, least in C_STORE_SPREAD.items():
        assert C_STORE_OUTCOMES[f"0x{status:04X}"] >= least, (status, C_STORE_OUTCOMES)
    assert C_STORE_OUTCOMES["stored"] >= 120 and C_STORE_OUTCOMES["kept"] >= 30


def test_after_fuzzing_the_archive_is_sound(archive):
    for association in archive.associations.values():
        assert association.is_open
        assert association.c_echo() == 0
    assert SqliteScpQueries(archive.scp.config.data_dir).integrity_problems() == []
