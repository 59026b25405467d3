"""What happened recently, in memory, for the dashboard: per-minute counts (stores,
commitments, delivered reports, N-ACTION to report latency, associations) and each peer's last
association. Fed by the service's events; bounded (a few hours of minutes), and lost at restart
by design: the journal stays the record (each transaction's delivery attempts are there), this
is only the picture of the last hours."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from stgcmt.events import (
    AssociationAccepted,
    AssociationRejected,
    CommitmentRequested,
    Event,
    InstanceStored,
    Peer,
    ReportDelivered,
    ReportFailed,
)

MINUTES = 180
"""Minutes the charts can show."""


@dataclass
class Minute:
    """One minute's counts (``at``: its start, epoch seconds)."""

    at: int
    stores: int = 0
    store_failures: int = 0
    bytes: int = 0
    commitments: int = 0
    reports: int = 0
    report_failures: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    associations: int = 0
    rejected: int = 0


class Timeline:
    """The events observer behind ``/api/v1/timeline`` and the peers' last associations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minutes: deque[Minute] = deque(maxlen=MINUTES)
        self._peers: dict[str, dict[str, Any]] = {}

    def observe(self, event: Event) -> None:
        with self._lock:
            match event:
                case InstanceStored():
                    minute = self._minute(event.at)
                    minute.stores += 1
                    minute.store_failures += event.status != 0
                    minute.bytes += event.size
                case CommitmentRequested():
                    self._minute(event.at).commitments += event.status == 0
                case ReportDelivered():
                    minute = self._minute(event.at)
                    minute.reports += 1
                    minute.latency_sum += event.latency
                    minute.latency_max = max(minute.latency_max, event.latency)
                case ReportFailed():
                    self._minute(event.at).report_failures += 1
                case AssociationAccepted():
                    self._minute(event.at).associations += 1
                    self._association(event.peer, event.at, "accepted", None)
                case AssociationRejected():
                    self._minute(event.at).rejected += 1
                    self._association(event.peer, event.at, "rejected", event.detail)

    def _minute(self, at: float) -> Minute:
        start = int(at // 60 * 60)
        if not self._minutes or self._minutes[-1].at < start:
            self._minutes.append(Minute(start))
            return self._minutes[-1]
        for minute in reversed(self._minutes):  # an event from a thread that lagged behind
            if minute.at <= start:
                return minute
        return self._minutes[0]

    def _association(self, peer: Peer, at: float, outcome: str, detail: str | None) -> None:
        self._peers[peer.calling_aet] = {
            "at": at,
            "host": peer.host,
            "outcome": outcome,
            "detail": detail,
        }

    # -- views ------------------------------------------------------------------------------

    def minutes(self, count: int = 60, now: float | None = None) -> list[dict[str, Any]]:
        """The last ``count`` minutes, oldest first, quiet minutes included as zeros."""
        current = int((now or time.time()) // 60 * 60)
        with self._lock:
            held = {m.at: asdict(m) for m in self._minutes}
        return [
            held.get(at) or asdict(Minute(at))
            for at in range(current - 60 * (count - 1), current + 1, 60)
        ]

    def last_association(self, aet: str) -> dict[str, Any] | None:
        """When ``aet`` last asked us for an association, from where, and how it went."""
        with self._lock:
            found = self._peers.get(aet)
            return dict(found) if found else None

    def peers_seen(self) -> list[str]:
        with self._lock:
            return sorted(self._peers)
