"""What happened, as typed events, for whoever watches: Prometheus metrics, the IHE ATNA audit
trail, the dashboard's charts.

The services (SCP, SCU agent) :meth:`Events.emit` one event per fact at the place the fact is
decided (an association accepted or rejected, a C-STORE answered, an N-ACTION answered, a
report delivered / failed / given up, a forged report refused). Observers subscribe with
:meth:`Events.subscribe`. An observer runs on the emitting thread (an engine or worker thread):
it must be quick and must never block (an audit sender queues and sends from its own thread), and
whatever it raises is logged and swallowed, so a broken observer can never change a DICOM
answer or kill a service thread.

Pure data: this module imports nothing of stgcmt, so every layer may emit and observe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

log = logging.getLogger("stgcmt.events")


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of an association, as events name it."""

    calling_aet: str
    called_aet: str
    host: str
    port: int

    @classmethod
    def of(cls, info: _PeerLike) -> Peer:
        """From the engine's peer description (``ul.PeerInfo``; this module imports no layer)."""
        return cls(info.calling_aet, info.called_aet, info.host, info.port)


class _PeerLike(Protocol):
    @property
    def calling_aet(self) -> str: ...
    @property
    def called_aet(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ApplicationActivity:
    """A service started or stopped (ATNA Application Activity)."""

    what: Literal["start", "stop"]
    role: Literal["scp", "agent"]
    aet: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AssociationAccepted:
    peer: Peer
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AssociationRejected:
    """``reason`` is the A-ASSOCIATE-RJ reason in words (``called-aet``, ``calling-aet``,
    ``congestion``, ...); ``detail`` says why in a sentence."""

    peer: Peer
    reason: str
    detail: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AssociationClosed:
    """An association we accepted ended; ``stored`` counts its C-STOREs by outcome
    (``stored``, ``duplicate``, ``replaced``, ``conflict``, ...)."""

    peer: Peer
    stored: dict[str, int]
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class InstanceStored:
    """A C-STORE answered (any status). ``seconds`` is the handling time, ``size`` the data set
    bytes received; the identifying UIDs are as the peer sent them (already validated only when
    ``status`` is 0x0000)."""

    peer: Peer
    status: int
    sop_class_uid: str
    sop_instance_uid: str
    size: int
    seconds: float
    study_instance_uid: str | None = None
    patient_id: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class CommitmentRequested:
    """An N-ACTION answered (any status; ``transaction_uid`` empty when the request had none)."""

    peer: Peer
    status: int
    transaction_uid: str
    references: int
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ReportDelivered:
    """An N-EVENT-REPORT accepted by the requester. ``latency`` is seconds from the N-ACTION
    to this delivery; ``via`` is ``same`` or ``new``."""

    calling_aet: str
    transaction_uid: str
    via: str
    committed: int
    failed: int
    latency: float
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ReportFailed:
    """One delivery attempt failed; another follows at ``next_attempt_at`` (epoch)."""

    calling_aet: str
    transaction_uid: str
    error: str
    next_attempt_at: float
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ReportGivenUp:
    calling_aet: str
    transaction_uid: str
    error: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class SecurityAlert:
    """Something hostile or misconfigured (ATNA Security Alert): ``kind`` is one of
    ``rejected-association``, ``forged-report``, ``tls-handshake``, ``path-outside-store``."""

    kind: str
    detail: str
    peer: Peer | None = None
    at: float = field(default_factory=time.time)


Event = (
    ApplicationActivity
    | AssociationAccepted
    | AssociationRejected
    | AssociationClosed
    | InstanceStored
    | CommitmentRequested
    | ReportDelivered
    | ReportFailed
    | ReportGivenUp
    | SecurityAlert
)
Observer = Callable[[Event], None]


class Events:
    """A list of observers; :meth:`emit` calls each in turn, isolating their failures."""

    def __init__(self) -> None:
        self._observers: tuple[Observer, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Add ``observer``; returns the function that removes it again."""
        with self._lock:
            self._observers = (*self._observers, observer)

        def unsubscribe() -> None:
            with self._lock:
                self._observers = tuple(o for o in self._observers if o is not observer)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for observer in self._observers:  # a tuple: subscribing meanwhile is safe
            try:
                observer(event)
            except Exception:
                log.exception("event observer %r failed on %s", observer, type(event).__name__)
