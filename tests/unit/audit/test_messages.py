"""The PS3.15 A.5.3 messages as built: valid against the A.5.1 schema (RELAX NG, lxml), with
the fields each message requires, and still valid and bounded whatever a peer sent."""

from __future__ import annotations

import base64
import datetime

import pytest
from lxml import etree

from stgcmt.audit import messages as m

from support.rsyslog import SCHEMA

AT = 1_800_000_000.25
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
SOURCE = m.Participant("MODALITY", True, m.SOURCE, "MODALITY", "127.0.0.1")
DESTINATION = m.Participant("ARCHIVE", False, m.DESTINATION, "ARCHIVE", "pacs.example")


def valid(xml: bytes) -> etree._Element:
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b"\n" not in xml, "one message is one line"
    root = etree.fromstring(xml)
    assert SCHEMA.validate(root), SCHEMA.error_log
    return root


def coded(node: etree._Element) -> tuple[str, str, str]:
    return node.get("csd-code"), node.get("codeSystemName"), node.get("originalText")


def transfer(**changes) -> m.Transfer:
    values = dict(
        source=SOURCE,
        destination=DESTINATION,
        study_uid="1.2.3.4",
        patient_id="PAT001",
        sop_classes={CT: 2, SC: 1},
    )
    return m.Transfer(**{**values, **changes})


def test_instances_transferred_names_source_destination_study_patient_and_counts() -> None:
    root = valid(m.instances_transferred(transfer(), "SITE-A", AT))
    event = root.find("EventIdentification")
    assert coded(event.find("EventID")) == ("110104", "DCM", "DICOM Instances Transferred")
    assert event.get("EventActionCode") == "C"
    assert event.get("EventOutcomeIndicator") == "0"
    stamp = datetime.datetime.fromisoformat(event.get("EventDateTime"))
    assert stamp.timestamp() == AT and stamp.utcoffset() == datetime.timedelta(0)
    source, destination = root.findall("ActiveParticipant")
    assert source.attrib == {
        "UserID": "MODALITY",
        "AlternativeUserID": "AETITLES=MODALITY",
        "UserIsRequestor": "true",
        "NetworkAccessPointID": "127.0.0.1",
        "NetworkAccessPointTypeCode": "2",
    }
    assert coded(source.find("RoleIDCode")) == ("110153", "DCM", "Source Role ID")
    assert destination.get("UserIsRequestor") == "false"
    assert destination.get("NetworkAccessPointTypeCode") == "1"  # a machine name
    assert coded(destination.find("RoleIDCode")) == ("110152", "DCM", "Destination Role ID")
    assert root.find("AuditSourceIdentification").get("AuditSourceID") == "SITE-A"
    study, patient = root.findall("ParticipantObjectIdentification")
    assert (study.get("ParticipantObjectID"), study.get("ParticipantObjectTypeCode")) == (
        "1.2.3.4",
        "2",
    )
    assert coded(study.find("ParticipantObjectIDTypeCode"))[0] == "110180"
    counts = {
        s.get("UID"): int(s.get("NumberOfInstances"))
        for s in study.findall("ParticipantObjectDescription/SOPClass")
    }
    assert counts == {CT: 2, SC: 1}
    assert patient.get("ParticipantObjectID") == "PAT001"
    assert (
        patient.get("ParticipantObjectTypeCode"),
        patient.get("ParticipantObjectTypeCodeRole"),
    ) == ("1", "1")
    assert coded(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")


def test_a_failure_is_an_outcome_with_its_description_on_one_line() -> None:
    xml = m.instances_transferred(transfer(), "S", AT, m.MINOR_FAILURE, "2 failed:\n0xA700")
    event = valid(xml).find("EventIdentification")
    assert event.get("EventOutcomeIndicator") == "4"
    assert event.find("EventOutcomeDescription").text == "2 failed: 0xA700"


def test_begin_transferring_without_a_patient() -> None:
    root = valid(m.begin_transferring(transfer(patient_id=None, sop_classes={}), "S", AT))
    assert coded(root.find("EventIdentification/EventID"))[0] == "110102"
    (study,) = root.findall("ParticipantObjectIdentification")
    assert study.find("ParticipantObjectDescription") is None


@pytest.mark.parametrize(("what", "code"), [("start", "110120"), ("stop", "110121")])
def test_application_activity(what: str, code: str) -> None:
    app = m.Participant("ARCHIVE", False, m.APPLICATION, "ARCHIVE", "pacs")
    root = valid(m.application_activity(what, app, "S", AT))  # type: ignore[arg-type]
    event = root.find("EventIdentification")
    assert coded(event.find("EventID"))[0] == "110100"
    assert event.get("EventActionCode") == "E"
    assert coded(event.find("EventTypeCode"))[0] == code
    assert coded(root.find("ActiveParticipant/RoleIDCode"))[0] == "110150"


def test_security_alert_names_reporter_performer_and_subject() -> None:
    reporter = m.Participant("ARCHIVE", False, m.APPLICATION, "ARCHIVE", "pacs")
    performer = m.Participant("EVIL", True, None, "EVIL", "10.0.0.66")
    subject = m.node("10.0.0.66", "calling AE 'EVIL' is not a known peer")
    root = valid(m.security_alert(m.NODE_AUTHENTICATION, reporter, performer, subject, "S", AT))
    event = root.find("EventIdentification")
    assert coded(event.find("EventID"))[0] == "110113"
    assert coded(event.find("EventTypeCode"))[0] == "110126"
    assert event.get("EventOutcomeIndicator") == "4"
    assert [p.get("UserID") for p in root.findall("ActiveParticipant")] == ["ARCHIVE", "EVIL"]
    detail = root.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert base64.b64decode(detail.get("value")).decode() == "calling AE 'EVIL' is not a known peer"


def test_hostile_values_stay_valid_xml_and_bounded() -> None:
    nasty = "AE\x00\x1b<&\"'>" + "\ud800" + "x" * 100_000
    hostile = m.Participant(nasty, True, m.SOURCE, nasty, nasty)
    xml = m.instances_transferred(
        transfer(source=hostile, study_uid=nasty, patient_id=nasty), nasty, AT, 4, nasty
    )
    root = valid(xml)
    assert len(xml) < 20_000
    assert root.find("ActiveParticipant").get("UserID").startswith("AE\ufffd\ufffd<&\"'>")


def test_a_message_without_participants_is_refused() -> None:
    with pytest.raises(ValueError, match="participant"):
        m.audit_message(m.Event(m.SECURITY_ALERT, "E", AT), [], "S")


def test_the_schema_refuses_what_the_standard_requires() -> None:
    """The validator has teeth: a message missing a required field fails it."""
    root = valid(m.instances_transferred(transfer(), "S", AT))
    del root.find("ActiveParticipant").attrib["UserIsRequestor"]
    assert not SCHEMA.validate(root)
    root = valid(m.instances_transferred(transfer(), "S", AT))
    root.remove(root.find("AuditSourceIdentification"))
    assert not SCHEMA.validate(root)
