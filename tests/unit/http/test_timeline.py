"""The dashboard's in-memory picture: per-minute counts and last associations, bounded."""

from __future__ import annotations

from stgcmt.events import (
    AssociationAccepted,
    AssociationRejected,
    CommitmentRequested,
    InstanceStored,
    Peer,
    ReportDelivered,
    ReportFailed,
)
from stgcmt.http import timeline as timeline_module
from stgcmt.http.timeline import Timeline

PEER = Peer("CT1", "ARCHIVE", "10.0.0.5", 4000)
T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def stored(at: float, status: int = 0, size: int = 100) -> InstanceStored:
    return InstanceStored(PEER, status, "1.2", "1.2.3", size, 0.01, at=at)


def test_minutes_count_what_happened_in_each():
    timeline = Timeline()
    for event in (
        stored(T0 + 1),
        stored(T0 + 59, status=0xA700, size=50),
        stored(T0 + 61),
        CommitmentRequested(PEER, 0, "1.2.9", 3, at=T0 + 62),
        CommitmentRequested(PEER, 0x0213, "1.2.10", 3, at=T0 + 63),
        ReportDelivered("CT1", "1.2.9", "new", 3, 0, 2.0, at=T0 + 64),
        ReportDelivered("CT1", "1.2.11", "same", 1, 0, 4.0, at=T0 + 65),
        ReportFailed("CT1", "1.2.12", "refused", T0 + 99, at=T0 + 66),
        stored(T0 + 30),  # late from a lagging thread: still its own minute
    ):
        timeline.observe(event)
    first, second, third = timeline.minutes(3, now=T0 + 121)
    assert (first["at"], first["stores"], first["store_failures"], first["bytes"]) == (
        T0,
        3,
        1,
        250,
    )
    assert (second["stores"], second["commitments"], second["reports"]) == (1, 1, 2)
    assert second["report_failures"] == 1
    assert (second["latency_sum"], second["latency_max"]) == (6.0, 4.0)
    assert third == {**third, "stores": 0, "reports": 0, "at": T0 + 120}


def test_associations_per_minute():
    timeline = Timeline()
    timeline.observe(AssociationAccepted(PEER, at=T0 + 5))
    timeline.observe(AssociationAccepted(PEER, at=T0 + 6))
    timeline.observe(AssociationRejected(PEER, "called-aet", "not ours", at=T0 + 7))
    (minute,) = timeline.minutes(1, now=T0 + 30)
    assert (minute["associations"], minute["rejected"]) == (2, 1)


def test_the_last_association_is_remembered():
    timeline = Timeline()
    timeline.observe(AssociationRejected(PEER, "calling-aet", "not known", at=T0))
    assert timeline.last_association("CT1") == {
        "at": T0,
        "host": "10.0.0.5",
        "outcome": "rejected",
        "detail": "not known",
    }


def test_memory_is_bounded():
    timeline = Timeline()
    for minute in range(timeline_module.MINUTES + 10):
        timeline.observe(stored(T0 + 60 * minute))
    assert (
        len(timeline.minutes(timeline_module.MINUTES, now=T0 + 60 * 200)) == timeline_module.MINUTES
    )
