"""DICOM PS3.15 Annex A.5 audit messages, built as XML: pure functions, no I/O.

Each builder returns the ``AuditMessage`` document of one event (A.5.3): its
EventIdentification, the ActiveParticipants, the AuditSourceIdentification and the
ParticipantObjectIdentifications, in the order the A.5.1 schema requires. Values come from
peers (AE titles, UIDs, patient IDs, error text): every one is cut to a bound and stripped of
the characters XML 1.0 cannot carry, so a hostile value can neither break the document nor
make it unbounded.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from xml.etree import ElementTree as ET

ActionCode = Literal["C", "R", "U", "D", "E"]
Outcome = Literal[0, 4, 8, 12]
SUCCESS: Outcome = 0
MINOR_FAILURE: Outcome = 4
SERIOUS_FAILURE: Outcome = 8

MAX_VALUE = 256
"""Longest identifier written (AE titles are 16, UIDs 64, patient IDs 64; hostile values more)."""
MAX_TEXT = 2048
"""Longest free text written (outcome descriptions, alert details)."""
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(value: str, limit: int = MAX_VALUE) -> str:
    """``value`` as XML 1.0 can carry it: forbidden characters replaced, cut to ``limit``."""
    return _NOT_XML.sub("\ufffd", value[:limit])


@dataclass(frozen=True)
class Code:
    """A coded value (A.5.1 CodedValueType): code, coding scheme, meaning."""

    code: str
    scheme: str
    meaning: str

    def element(self, parent: ET.Element, tag: str) -> ET.Element:
        attributes = {"csd-code": self.code, "codeSystemName": self.scheme}
        return ET.SubElement(parent, tag, {**attributes, "originalText": self.meaning})


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# Event IDs (PS3.16 DCM codes, as PS3.15 A.5.3 names them)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
SECURITY_ALERT = _dcm("110113", "Security Alert")
# Event Type Codes
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
USE_OF_RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
# Role ID Codes
APPLICATION = _dcm("110150", "Application")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
# Participant Object ID Type Codes
STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
NODE_ID = _dcm("110182", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
APPLICATION_SERVER = "4"
"""Audit Source Type Code (A.5.1.2.1): an application server process."""


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a DICOM application by AE title, or a process by name.
    ``host`` becomes the NetworkAccessPointID (typed IP address or machine name)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    aet: str | None = None
    host: str | None = None

    def element(self, parent: ET.Element) -> None:
        attributes = {"UserID": clean(self.user_id)}
        if self.aet is not None:
            attributes["AlternativeUserID"] = f"AETITLES={clean(self.aet)}"
        attributes["UserIsRequestor"] = "true" if self.requestor else "false"
        if self.host:
            attributes["NetworkAccessPointID"] = clean(self.host)
            attributes["NetworkAccessPointTypeCode"] = "2" if _is_address(self.host) else "1"
        node = ET.SubElement(parent, "ActiveParticipant", attributes)
        if self.role is not None:
            self.role.element(node, "RoleIDCode")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification (A.5.1): a study, a patient, a node. ``sop_classes``
    is the ParticipantObjectDescription's SOPClass list (UID → number of instances);
    ``details`` are type/value pairs (values base64, as the schema's ValuePair requires)."""

    object_id: str
    id_type: Code
    type_code: Literal["1", "2", "3", "4"]
    role: str
    sop_classes: Mapping[str, int] = field(default_factory=dict)
    details: Sequence[tuple[str, str]] = ()

    def element(self, parent: ET.Element) -> None:
        attributes = {
            "ParticipantObjectID": clean(self.object_id),
            "ParticipantObjectTypeCode": self.type_code,
            "ParticipantObjectTypeCodeRole": self.role,
        }
        node = ET.SubElement(parent, "ParticipantObjectIdentification", attributes)
        self.id_type.element(node, "ParticipantObjectIDTypeCode")
        for kind, value in self.details:
            encoded = base64.b64encode(clean(value, MAX_TEXT).encode()).decode()
            ET.SubElement(node, "ParticipantObjectDetail", {"type": kind, "value": encoded})
        if self.sop_classes:
            description = ET.SubElement(node, "ParticipantObjectDescription")
            for uid, number in sorted(self.sop_classes.items()):
                ET.SubElement(
                    description, "SOPClass", {"UID": clean(uid), "NumberOfInstances": str(number)}
                )


def study(uid: str, sop_classes: Mapping[str, int]) -> ParticipantObject:
    """A study (A.5.3.4 "Studies being transferred"): system object, role Report."""
    return ParticipantObject(uid, STUDY_INSTANCE_UID, "2", "3", sop_classes)


def patient(patient_id: str) -> ParticipantObject:
    """The patient (A.5.3.4 "Patient"): person, role Patient."""
    return ParticipantObject(patient_id, PATIENT_NUMBER, "1", "1")


def node(host: str, detail: str) -> ParticipantObject:
    """A Security Alert's subject (A.5.3.11 "Alert Subject"): the node, and what happened."""
    return ParticipantObject(host, NODE_ID, "2", "13", details=(("Alert Description", detail),))


@dataclass(frozen=True)
class Event:
    """EventIdentification (A.5.1): what happened, when, and how it ended."""

    event_id: Code
    action: ActionCode
    at: float
    outcome: Outcome = SUCCESS
    type_code: Code | None = None
    description: str | None = None

    def element(self, parent: ET.Element) -> None:
        stamp = datetime.datetime.fromtimestamp(self.at, datetime.UTC)
        attributes = {
            "EventActionCode": self.action,
            "EventDateTime": stamp.isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": str(self.outcome),
        }
        node = ET.SubElement(parent, "EventIdentification", attributes)
        self.event_id.element(node, "EventID")
        if self.type_code is not None:
            self.type_code.element(node, "EventTypeCode")
        if self.description:
            # one line: the message is one syslog line in a file
            words = " ".join(self.description.split())
            ET.SubElement(node, "EventOutcomeDescription").text = clean(words, MAX_TEXT)


def audit_message(
    event: Event,
    participants: Sequence[Participant],
    source_id: str,
    objects: Sequence[ParticipantObject] = (),
) -> bytes:
    """The AuditMessage document, UTF-8, on one line (a syslog message is one line in a file)."""
    if not participants:
        raise ValueError("an audit message names at least one active participant")
    root = ET.Element("AuditMessage")
    event.element(root)
    for participant in participants:
        participant.element(root)
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": clean(source_id)})
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": APPLICATION_SERVER})
    for item in objects:
        item.element(root)
    body = ET.tostring(root, encoding="unicode")  # no text carries a line break (see Event)
    return XML_DECLARATION + body.encode()


# -- the messages of PS3.15 A.5.3 ----------------------------------------------------------------


def application_activity(
    what: Literal["start", "stop"], application: Participant, source_id: str, at: float
) -> bytes:
    """A.5.3.1 Application Activity: an application started or stopped."""
    type_code = APPLICATION_START if what == "start" else APPLICATION_STOP
    event = Event(APPLICATION_ACTIVITY, "E", at, type_code=type_code)
    return audit_message(event, [application], source_id)


@dataclass(frozen=True)
class Transfer:
    """What A.5.3.3 and A.5.3.4 describe: one study (of one patient) from a source to a
    destination, with its instances counted per SOP Class. A data set that named no study
    (or no patient) leaves that object out rather than inventing one."""

    source: Participant
    destination: Participant
    study_uid: str | None
    patient_id: str | None
    sop_classes: Mapping[str, int]

    def objects(self) -> list[ParticipantObject]:
        found = [study(self.study_uid, self.sop_classes)] if self.study_uid is not None else []
        return found + ([patient(self.patient_id)] if self.patient_id is not None else [])


def begin_transferring(transfer: Transfer, source_id: str, at: float) -> bytes:
    """A.5.3.3 Begin Transferring DICOM Instances."""
    event = Event(BEGIN_TRANSFERRING, "E", at)
    participants = [transfer.source, transfer.destination]
    return audit_message(event, participants, source_id, transfer.objects())


def instances_transferred(
    transfer: Transfer,
    source_id: str,
    at: float,
    outcome: Outcome = SUCCESS,
    description: str | None = None,
) -> bytes:
    """A.5.3.4 DICOM Instances Transferred, as the receiver writes it: action Create."""
    event = Event(INSTANCES_TRANSFERRED, "C", at, outcome, description=description)
    participants = [transfer.source, transfer.destination]
    return audit_message(event, participants, source_id, transfer.objects())


def security_alert(
    kind: Code,
    reporter: Participant,
    performer: Participant | None,
    subject: ParticipantObject,
    source_id: str,
    at: float,
    outcome: Outcome = MINOR_FAILURE,
) -> bytes:
    """A.5.3.11 Security Alert: ``reporter`` detected it, ``performer`` (if known) did it."""
    event = Event(SECURITY_ALERT, "E", at, outcome, type_code=kind)
    participants = [reporter] + ([performer] if performer is not None else [])
    return audit_message(event, participants, source_id, [subject])
