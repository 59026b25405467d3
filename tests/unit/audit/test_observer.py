"""Service events in, audit messages out: which messages, naming whom, counting what."""

from __future__ import annotations

import pytest
from lxml import etree

from stgcmt.audit import observer as obs
from stgcmt.audit.observer import AuditObserver, LocalApplication
from stgcmt.audit.syslog import NOTICE, WARNING
from stgcmt.events import (
    ApplicationActivity,
    AssociationClosed,
    CommitmentRequested,
    InstanceStored,
    Peer,
    SecurityAlert,
)

from support.rsyslog import SCHEMA

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
PEER = Peer("MODALITY", "ARCHIVE", "127.0.0.1", 40000)
OTHER = Peer("MODALITY", "ARCHIVE", "127.0.0.1", 40001)
LOCAL = LocalApplication("ARCHIVE", "pacs1", "SITE-A")


class Recorded(list):
    """What the observer hands its transport: parsed and schema-checked."""

    def __call__(self, xml: bytes, at: float, severity: int) -> None:
        root = etree.fromstring(xml)
        assert SCHEMA.validate(root), SCHEMA.error_log
        self.append((root, severity))

    def events(self) -> list[str]:
        return [root.find("EventIdentification/EventID").get("csd-code") for root, _ in self]


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def observer(recorded: Recorded) -> AuditObserver:
    return AuditObserver(recorded, LOCAL)


def stored(
    peer: Peer = PEER, *, study: str = "1.2.3", sop: str = CT, status: int = 0, patient="P1"
):
    return InstanceStored(peer, status, sop, "1.2.3.4.5", 100, 0.01, study, patient)


def counts(root: etree._Element) -> dict[str, int]:
    study = root.find("ParticipantObjectIdentification")
    return {
        s.get("UID"): int(s.get("NumberOfInstances"))
        for s in study.findall("ParticipantObjectDescription/SOPClass")
    }


def test_one_begin_per_study_then_one_transferred_per_study_at_close(
    observer: AuditObserver, recorded: Recorded
) -> None:
    for event in (stored(), stored(sop=SC), stored(study="9.9"), stored(), stored(OTHER)):
        observer(event)
    assert recorded.events() == ["110102", "110102", "110102"]  # 1.2.3 and 9.9 here, 1.2.3 there
    observer(AssociationClosed(PEER, {"stored": 4}))
    assert recorded.events()[3:] == ["110104", "110104"]
    first, second = (root for root, _ in recorded[3:])
    assert counts(first) == {CT: 2, SC: 1} and counts(second) == {CT: 1}
    source, destination = first.findall("ActiveParticipant")
    assert (source.get("UserID"), source.get("NetworkAccessPointID")) == ("MODALITY", "127.0.0.1")
    assert source.get("UserIsRequestor") == "true"
    assert (destination.get("AlternativeUserID"), destination.get("NetworkAccessPointID")) == (
        "AETITLES=ARCHIVE",
        "pacs1",
    )
    assert first.find("AuditSourceIdentification").get("AuditSourceID") == "SITE-A"
    patient = first.findall("ParticipantObjectIdentification")[1]
    assert patient.get("ParticipantObjectID") == "P1"
    observer(AssociationClosed(OTHER, {"stored": 1}))
    assert counts(recorded[-1][0]) == {CT: 1}
    assert all(severity == NOTICE for _, severity in recorded)


def test_two_patients_in_one_study_are_two_messages(observer, recorded) -> None:
    observer(stored(patient="P1"))
    observer(stored(patient="P2"))
    observer(AssociationClosed(PEER, {}))
    patients = [
        r.findall("ParticipantObjectIdentification")[1].get("ParticipantObjectID")
        for r, _ in recorded[2:]
    ]
    assert patients == ["P1", "P2"]


def test_failed_stores_make_a_minor_failure_described_by_status(observer, recorded) -> None:
    observer(stored())
    observer(stored(status=0xA700, study=None))
    observer(stored(status=0xA700))
    observer(stored(status=0xB007))  # a warning: stored
    observer(AssociationClosed(PEER, {}))
    root, severity = recorded[-1]
    event = root.find("EventIdentification")
    assert event.get("EventOutcomeIndicator") == "4" and severity == WARNING
    assert (
        event.find("EventOutcomeDescription").text
        == "2 C-STOREs failed: 0xA700 out of resources x2"
    )
    assert counts(root) == {CT: 2}


def test_nothing_stored_is_a_serious_failure_without_a_study(observer, recorded) -> None:
    observer(stored(status=0xC000))
    observer(AssociationClosed(PEER, {}))
    ((root, _),) = recorded
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert root.find("ParticipantObjectIdentification") is None
    assert (
        "0xC000 cannot understand x1"
        in root.find("EventIdentification/EventOutcomeDescription").text
    )


def test_an_association_that_stored_nothing_writes_nothing(observer, recorded) -> None:
    observer(AssociationClosed(PEER, {}))
    observer(CommitmentRequested(PEER, 0, "1.2.3", 3))
    assert recorded == []


@pytest.mark.parametrize(
    ("kind", "type_code", "outcome"),
    [
        ("rejected-association", "110126", "4"),
        ("tls-handshake", "110126", "4"),
        ("forged-report", "110132", "8"),
        ("something-new", "110132", "4"),
    ],
)
def test_security_alerts(observer, recorded, kind: str, type_code: str, outcome: str) -> None:
    observer(SecurityAlert(kind, "calling AE 'X' is not a known peer", PEER))
    ((root, severity),) = recorded
    event = root.find("EventIdentification")
    assert event.find("EventID").get("csd-code") == "110113" and severity == WARNING
    assert event.find("EventTypeCode").get("csd-code") == type_code
    assert event.get("EventOutcomeIndicator") == outcome
    reporter, performer = root.findall("ActiveParticipant")
    assert reporter.get("UserID") == "ARCHIVE" and performer.get("UserID") == "MODALITY"
    subject = root.find("ParticipantObjectIdentification")
    assert subject.get("ParticipantObjectID") == "127.0.0.1"


def test_a_security_alert_before_any_ae_title_names_the_host(observer, recorded) -> None:
    observer(SecurityAlert("tls-handshake", "certificate unknown", Peer("", "", "10.1.1.1", 5)))
    performer = recorded[0][0].findall("ActiveParticipant")[1]
    assert performer.get("UserID") == "10.1.1.1" and performer.get("AlternativeUserID") is None
    observer(SecurityAlert("path-outside-store", "../etc/passwd"))
    assert len(recorded[1][0].findall("ActiveParticipant")) == 1


def test_application_start_and_stop(observer, recorded) -> None:
    observer(ApplicationActivity("start", "scp", "ARCHIVE"))
    observer(ApplicationActivity("stop", "scp", "ARCHIVE"))
    codes = [r.find("EventIdentification/EventTypeCode").get("csd-code") for r, _ in recorded]
    assert codes == ["110120", "110121"]


def test_studies_per_association_are_bounded(observer, recorded, monkeypatch) -> None:
    monkeypatch.setattr(obs, "MAX_STUDIES_PER_ASSOCIATION", 3)
    for number in range(4):
        observer(stored(study=f"1.{number}"))
    # the fourth study wrote the first three out early
    assert recorded.events() == ["110102"] * 3 + ["110104"] * 3 + ["110102"]
    observer(AssociationClosed(PEER, {}))
    assert recorded.events()[-1] == "110104" and len(recorded) == 8


def test_open_associations_are_bounded(observer, recorded, monkeypatch) -> None:
    monkeypatch.setattr(obs, "MAX_OPEN_ASSOCIATIONS", 2)
    for port in range(3):
        observer(stored(Peer("M", "ARCHIVE", "127.0.0.1", port)))
    # the third association wrote out the oldest, whose close was lost
    assert recorded.events() == ["110102", "110102", "110104", "110102"]
    assert recorded[2][0].find("ActiveParticipant").get("UserID") == "M"


def test_a_stored_instance_without_a_study_is_no_failure(observer, recorded) -> None:
    """The study object is left out, not invented; the outcome stays a success."""
    observer(stored(study=None))
    observer(AssociationClosed(PEER, {"stored": 1}))
    assert recorded.events() == ["110102", "110104"]
    root, severity = recorded[1]
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    (patient,) = root.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "P1" and severity == NOTICE
