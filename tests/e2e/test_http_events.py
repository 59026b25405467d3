"""The events the HTTP metrics, the dashboard's charts and the audit trail are fed by: what a
subscriber of a running SCP sees for one real store + commit from a pynetdicom modality, and
for an association it rejects."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom import dcmread

from stgcmt.config import ScpConfig
from stgcmt.events import (
    ApplicationActivity,
    AssociationAccepted,
    AssociationClosed,
    AssociationRejected,
    CommitmentRequested,
    Event,
    Events,
    InstanceStored,
    ReportDelivered,
    SecurityAlert,
)
from stgcmt.scp.service import StorageCommitmentSCP

from support.common import FAST_RETRY, LOCALHOST, remote, wait_for
from support.http import dataset_size
from support.pynetdicom_peer import Modality, refs_of


class Seen:
    """A subscriber: every event, in order, from whichever thread emitted it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


@pytest.fixture
def watched(tmp_path: Path, modality: Modality):
    seen = Seen()
    events = Events()
    events.subscribe(seen)
    config = ScpConfig(
        bind=LOCALHOST,
        port=0,
        data_dir=tmp_path / "scp",
        retry=FAST_RETRY,
        remotes=(remote(modality.aet, modality.listen()),),
    )
    scp = StorageCommitmentSCP(config, events).start()
    yield scp, seen
    if seen.of(ApplicationActivity)[-1].what != "stop":
        scp.stop()


def test_one_store_and_commit_as_events(watched, modality, instances):
    scp, seen = watched
    paths = instances(2) + instances(1, pixel_bytes=300_000)  # the large one is streamed
    assert modality.store(scp.port, paths) == [0, 0, 0]
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.77") == 0
    assert modality.wait_report(15)
    wait_for(lambda: seen.of(ReportDelivered) and len(seen.of(AssociationClosed)) >= 2, 10)

    assert seen.of(ApplicationActivity) == [seen.events[0]]
    assert seen.events[0].what == "start" and seen.events[0].role == "scp"
    accepted = seen.of(AssociationAccepted)
    assert [a.peer.calling_aet for a in accepted[:2]] == ["MODALITY", "MODALITY"]

    stored = seen.of(InstanceStored)
    assert [(s.status, s.sop_instance_uid) for s in stored] == [(0, p.stem) for p in paths]
    assert [s.size for s in stored] == [dataset_size(p) for p in paths]
    assert all(0 < s.seconds < 10 for s in stored)
    assert [(s.study_instance_uid, s.patient_id) for s in stored] == [
        (str(dcmread(p).StudyInstanceUID), "PAT001") for p in paths
    ]

    (requested,) = seen.of(CommitmentRequested)
    assert (requested.status, requested.transaction_uid, requested.references) == (
        0,
        "1.2.3.77",
        3,
    )
    (delivered,) = seen.of(ReportDelivered)
    assert (delivered.calling_aet, delivered.transaction_uid, delivered.via) == (
        "MODALITY",
        "1.2.3.77",
        "new",
    )
    assert (delivered.committed, delivered.failed) == (3, 0)
    assert 0 < delivered.latency < 15
    closed = seen.of(AssociationClosed)
    assert closed[0].stored == {"stored": 3}
    scp.stop()
    assert seen.events[-1] == ApplicationActivity("stop", "scp", "STGCMT_SCP", seen.events[-1].at)


def test_rejected_association_is_an_event_and_a_security_alert(watched):
    scp, seen = watched
    stranger = Modality("STRANGER")
    try:
        assoc = stranger.associate(scp.port)
        assert assoc.is_rejected
    finally:
        stranger.stop()
    wait_for(lambda: seen.of(SecurityAlert), 5)
    (rejected,) = seen.of(AssociationRejected)
    assert (rejected.peer.calling_aet, rejected.reason) == ("STRANGER", "calling-aet")
    assert "not a known peer" in rejected.detail
    (alert,) = seen.of(SecurityAlert)
    assert alert.kind == "rejected-association" and alert.peer == rejected.peer
    assert not seen.of(AssociationAccepted)
