"""The seam's vocabulary: what the services and the networking engines share.

Services build :class:`Handlers` and :class:`ContextPlan` and receive :class:`StoreRequest`,
:class:`ActionRequest` and :class:`EventReport`; the engine (our
asyncio upper layer) turns DICOM traffic into these and back. :class:`Link`,
:class:`Association` and :class:`Server` are Protocols: exactly what the services use, which
the engine's classes satisfy structurally. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Self

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from stgcmt.dicom import codec
from stgcmt.dicom.commitment import CommitmentReport, CommitmentRequest
from stgcmt.dicom.status import SUCCESS
from stgcmt.dicom.storage_classes import STORAGE_SOP_CLASSES as STORAGE_SOP_CLASSES
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION

TRANSFER_SYNTAXES: tuple[str, ...] = tuple(
    dict.fromkeys([ExplicitVRLittleEndian, ImplicitVRLittleEndian, *AllTransferSyntaxes])
)
"""Accepted for storage, in order of preference when one context offers several: the two
uncompressed little endian syntaxes first (Explicit, then Implicit), then the others in
pydicom's order (compressed ones stored as received). Uncompressed before compressed, so an
archive never picks a lossy syntax when the sender also offered the original pixels."""
NON_STORAGE_SYNTAXES: tuple[str, ...] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
MAX_CONTEXTS = 128

_ids = itertools.count(1)


def next_association_id() -> int:
    """Process-wide unique id for :attr:`PeerInfo.association_id`."""
    return next(_ids)


CommitmentRole = Literal["scu", "scp"]


class AssociationError(ConnectionError):
    """The peer could not be reached, rejected us, or did not accept what we need."""


class Unreachable(AssociationError):
    """No DICOM answer at all: connection refused or timed out, TLS handshake failed, or no
    answer to the A-ASSOCIATE-RQ (``stgcmt echo`` exits 2 for these, 1 for a rejection)."""


@dataclass(frozen=True)
class PeerInfo:
    """Who is on the other end of an association."""

    calling_aet: str
    called_aet: str
    host: str
    port: int
    association_id: int
    proposed: tuple[str, ...] = field(default=(), compare=False)
    """The abstract syntaxes the requester proposed (set for associations we accept), so an
    ``accept`` handler can treat a Verification-only association differently."""

    def __str__(self) -> str:
        return f"{self.calling_aet}@{self.host}:{self.port}"


RejectionReason = Literal[
    "no-reason",
    "application-context",
    "calling-aet",
    "called-aet",
    "provider-no-reason",
    "protocol-version",
    "temporary-congestion",
    "congestion",
]

REJECTIONS: dict[RejectionReason, tuple[int, int, bool, str]] = {
    # reason: (source, reason/diag, always transient, words), PS3.8 Table 9-21
    "no-reason": (1, 1, False, "no reason given"),
    "application-context": (1, 2, False, "application context name not supported"),
    "calling-aet": (1, 3, False, "calling AE title not recognised"),
    "called-aet": (1, 7, False, "called AE title not recognised"),
    "provider-no-reason": (2, 1, False, "no reason given"),
    "protocol-version": (2, 2, False, "protocol version not supported"),
    "temporary-congestion": (3, 1, True, "temporary congestion"),
    "congestion": (3, 2, True, "local limit exceeded"),  # provider (presentation) limit
}
"""The one table of A-ASSOCIATE-RJ reasons: built from by the engine when it rejects, read
back by :func:`rejected` when a peer rejects us."""

REJECTION_WORDS = {(source, reason): words for source, reason, _, words in REJECTIONS.values()}


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send: permanent by default (congestion is always transient)."""

    reason: RejectionReason
    transient: bool = False

    def codes(self) -> tuple[int, int, int]:
        """(result, source, reason/diag) of the A-ASSOCIATE-RJ PDU."""
        source, reason, transient, _ = REJECTIONS[self.reason]
        return (2 if self.transient or transient else 1), source, reason


@dataclass
class StoreRequest:
    """A received C-STORE: the encoded dataset (without File Meta) and its identity. Given to
    :attr:`Handlers.c_store_stream`, ``dataset`` holds only the first bytes of the data set
    (at least 64 KiB, and every attribute up to Patient ID)."""

    peer: PeerInfo
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset: bytes
    abstract_syntax: str = ""
    """The abstract syntax of the presentation context it arrived on."""


@dataclass
class ActionRequest:
    """A received N-ACTION, its Action Information still encoded as received (``data``, None
    if absent): decoding is the service's call, with :meth:`commitment`."""

    peer: PeerInfo
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    action_type_id: int | None
    data: bytes | None
    implicit_vr: bool = True
    little_endian: bool = True

    def commitment(self, max_references: int) -> CommitmentRequest:
        """Decode and validate; raises InvalidRequest with the status to answer."""
        return codec.decode_request(self.data, self.implicit_vr, self.little_endian, max_references)


@dataclass
class EventReport:
    """A received N-EVENT-REPORT, its Event Information still encoded (``data``)."""

    peer: PeerInfo
    event_type_id: int | None
    data: bytes | None
    implicit_vr: bool = True
    little_endian: bool = True

    def report(self) -> CommitmentReport:
        """Decode; raises InvalidRequest if the report cannot be used."""
        return codec.decode_report(self.data, self.implicit_vr, self.little_endian)


Information = Dataset | CommitmentRequest | CommitmentReport
"""What a service sends as N-ACTION / N-EVENT-REPORT information: the protocol objects (the
engine encodes them, fast), or a pydicom Dataset (for tests that need odd content)."""


class StoreSink(Protocol):
    """Where the rest of a streamed C-STORE's data set goes, piece by piece as P-DATA-TF
    PDUs arrive (in the association's thread, in order)."""

    def write(self, data: bytes | memoryview) -> None:
        """The next bytes (a view on a received PDU: copy what must outlive the call)."""

    def finish(self) -> int:
        """The last bytes have arrived: the C-STORE status to answer."""

    def discard(self) -> None:
        """The association ended before the last bytes came: keep nothing of it."""


class Link(Protocol):
    """An established association, seen from a service: what arrived came on it, and a
    report can be sent back on it."""

    @property
    def peer(self) -> PeerInfo: ...

    @property
    def is_open(self) -> bool: ...

    def n_event_report(self, event_type_id: int, information: Information) -> int | None:
        """Send an N-EVENT-REPORT for the Storage Commitment instance; the peer's status, or
        None if none came (timeout, abort)."""
        ...


@dataclass
class Handlers:
    """What a service does with what arrives. Unset handlers mean "not offered"."""

    accept: Callable[[PeerInfo], Rejection | None] | None = None
    c_store: Callable[[StoreRequest], int] | None = None
    """A C-STORE held whole in memory; for a small one (and any other answered at once) it
    runs on the engine's event loop, so it must not wait on anything slow."""
    c_store_stream: Callable[[StoreRequest], StoreSink | int] | None = None
    """A C-STORE whose data set is longer than the first bytes it is checked by, called (in
    the association's thread) with those bytes: a status refuses it (the rest is read and
    dropped, the status answered once it has all arrived), a :class:`StoreSink` takes the
    rest. Unset: every data set is held whole (up to the engine's ``max_dataset_bytes``)."""
    n_action: Callable[[Link, ActionRequest], tuple[int, Dataset | None]] | None = None
    n_action_answered: Callable[[Link], None] | None = None
    n_event_report: Callable[[Link, EventReport], int] | None = None
    n_event_report_answered: Callable[[Link], None] | None = None
    """Called once the response to a received N-EVENT-REPORT has left: only then may its
    receiver release the association (an A-RELEASE-RQ queued ahead of the response would
    break the association)."""
    closed: Callable[[Link], None] | None = None
    tls_failed: Callable[[str, int, str], None] | None = None
    """A TLS handshake on our listener failed: the peer's address, port and why (on the
    engine's loop: quick, never blocking)."""


@dataclass
class ContextPlan:
    """What an association we open asks for."""

    storage: Sequence[tuple[str, str | tuple[str, ...]]] = ()
    """One presentation context for C-STORE per item: (SOP Class UID, transfer syntax), or
    (SOP Class UID, transfer syntaxes) for a context offering several, the preferred first."""
    commitment: CommitmentRole | None = None
    """'scu' to send N-ACTION (receive reports on it), 'scp' to deliver reports (asks for the
    SCP role with an SCP/SCU Role Selection item: SCU role 0, SCP role 1)."""
    echo: bool = False
    require_commitment: bool = True
    """Fail the association request if the peer rejects Storage Commitment; False lets a
    sender store first and report the missing commitment afterwards."""
    commitment_syntaxes: tuple[str, ...] = ()
    """Transfer syntaxes proposed for Storage Commitment (a peer's profile); empty: Implicit
    and Explicit VR Little Endian."""


def is_success(status: int | None) -> bool:
    return status is not None and (status == SUCCESS or (status & 0xF000) == 0xB000)


def requested_contexts(plan: ContextPlan) -> list[tuple[str, tuple[str, ...]]]:
    """(abstract syntax, transfer syntaxes) to propose: one context per storage pair, then
    Storage Commitment, then Verification when asked for (or when nothing else is)."""
    contexts: list[tuple[str, tuple[str, ...]]] = [
        (uid, (ts,) if isinstance(ts, str) else tuple(ts)) for uid, ts in plan.storage
    ]
    if plan.commitment:
        syntaxes = plan.commitment_syntaxes or NON_STORAGE_SYNTAXES
        contexts.append((STORAGE_COMMITMENT_PUSH_MODEL, tuple(syntaxes)))
    if plan.echo or not contexts:
        contexts.append((VERIFICATION, NON_STORAGE_SYNTAXES))
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} presentation contexts exceed {MAX_CONTEXTS}")
    return contexts


class Association(Protocol):
    """An association we opened; as a context manager it releases on exit, or aborts if
    the block raised."""

    @property
    def peer(self) -> PeerInfo: ...

    @property
    def is_open(self) -> bool: ...

    @property
    def accepts_commitment(self) -> bool: ...

    def accepts(self, sop_class_uid: str, transfer_syntax: str) -> bool: ...

    def c_echo(self) -> int | None: ...

    def c_store(self, path: Path, transfer_syntax: str | None = None) -> int | None:
        """One Part 10 file's data set, as it is or transcoded to ``transfer_syntax``; None if
        no response came (outcome unknown) or the file cannot be sent on this association;
        OSError if it cannot be read, ValueError if it cannot be transcoded."""
        ...

    def n_action(self, information: Information) -> int | None: ...

    def n_event_report(self, event_type_id: int, information: Information) -> int | None: ...

    def release(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class Server(Protocol):
    """A listening AE; as a context manager it starts and stops."""

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    @property
    def port(self) -> int: ...

    @property
    def active_associations(self) -> int:
        """Associations being served (the one being negotiated included)."""
        ...

    @property
    def pending_connections(self) -> int:
        """Connections that have not sent an A-ASSOCIATE-RQ yet (or not finished TLS)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


# The sentences an AssociationError carries, the same whichever engine runs.


def rejected(remote: object, result: int, source: int, reason: int) -> str:
    """An A-ASSOCIATE-RJ, in words (PS3.8 9.3.4)."""
    transient = " (transient)" if result == 2 else ""
    words = REJECTION_WORDS.get((source, reason), "see the peer's log")
    return f"{remote} rejected the association{transient}: {words}"


def cannot_connect(remote: object) -> str:
    return f"cannot connect to {remote} (connection refused or timed out)"


def no_answer(remote: object) -> str:
    return f"{remote} did not answer the association request"


def aborted_request(remote: object) -> str:
    return f"{remote} aborted the association request"


def no_commitment(remote: object) -> str:
    return (
        f"{remote} does not support Storage Commitment Push Model "
        f"({STORAGE_COMMITMENT_PUSH_MODEL}): presentation context rejected"
    )


def no_accepted_context(remote: object, proposed: Iterable[str]) -> str:
    if STORAGE_COMMITMENT_PUSH_MODEL in set(proposed):
        return no_commitment(remote)
    return f"{remote} accepted none of the proposed presentation contexts"
