"""Typed views of the DIMSE command sets the engine sends and answers (PS3.7 §9.3, §10.3).

A command set on the wire is a :data:`~.dimse.CommandSet` (element -> value) and stays one on
the hot path: these slotted dataclasses only *build* one (:meth:`command`) and *read* one
(:meth:`from_command`), so the engine names fields instead of tags. The Message ID is set by
the association when the request is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from stgcmt.dicom.commitment import ACTION_TYPE_REQUEST_COMMITMENT
from stgcmt.dicom.uids import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.ul.dimse import (
    ACTION_TYPE_ID,
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    DATA_SET_PRESENT,
    EVENT_TYPE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    NO_DATA_SET,
    PRIORITY,
    REQUESTED_SOP_CLASS_UID,
    REQUESTED_SOP_INSTANCE_UID,
    STATUS,
    CommandField,
    CommandSet,
)

_C_STORE_RQ = int(CommandField.C_STORE_RQ)
_N_ACTION_RQ = int(CommandField.N_ACTION_RQ)
_N_EVENT_REPORT_RQ = int(CommandField.N_EVENT_REPORT_RQ)
_C_ECHO_RQ = int(CommandField.C_ECHO_RQ)


def _text(command: CommandSet, element: int) -> str:
    value = command.get(element, "")
    return value if isinstance(value, str) else ""


def _us(command: CommandSet, element: int) -> int | None:
    value = command.get(element)
    return value if isinstance(value, int) else None


@dataclass(slots=True)
class CStoreRq:
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = 0

    def command(self) -> CommandSet:
        return {
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
            COMMAND_FIELD: _C_STORE_RQ,
            PRIORITY: self.priority,
            COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            AFFECTED_SOP_INSTANCE_UID: self.affected_sop_instance_uid,
        }

    @classmethod
    def from_command(cls, command: CommandSet) -> CStoreRq:
        get = command.get  # the hot path: every C-STORE received
        sop_class = get(AFFECTED_SOP_CLASS_UID, "")
        sop_instance = get(AFFECTED_SOP_INSTANCE_UID, "")
        priority = get(PRIORITY, 0)
        return cls(
            sop_class if isinstance(sop_class, str) else "",
            sop_instance if isinstance(sop_instance, str) else "",
            priority if isinstance(priority, int) else 0,
        )


@dataclass(slots=True)
class NActionRq:
    """N-ACTION-RQ; by default the Storage Commitment request (Action Type 1)."""

    requested_sop_class_uid: str = STORAGE_COMMITMENT_PUSH_MODEL
    requested_sop_instance_uid: str = STORAGE_COMMITMENT_INSTANCE
    action_type_id: int | None = ACTION_TYPE_REQUEST_COMMITMENT

    def command(self) -> CommandSet:
        command: CommandSet = {
            REQUESTED_SOP_CLASS_UID: self.requested_sop_class_uid,
            COMMAND_FIELD: _N_ACTION_RQ,
            COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            REQUESTED_SOP_INSTANCE_UID: self.requested_sop_instance_uid,
        }
        if self.action_type_id is not None:
            command[ACTION_TYPE_ID] = self.action_type_id
        return command

    @classmethod
    def from_command(cls, command: CommandSet) -> NActionRq:
        return cls(
            _text(command, REQUESTED_SOP_CLASS_UID),
            _text(command, REQUESTED_SOP_INSTANCE_UID),
            _us(command, ACTION_TYPE_ID),
        )


@dataclass(slots=True)
class NEventReportRq:
    """N-EVENT-REPORT-RQ; by default for the Storage Commitment instance."""

    event_type_id: int | None
    affected_sop_class_uid: str = STORAGE_COMMITMENT_PUSH_MODEL
    affected_sop_instance_uid: str = STORAGE_COMMITMENT_INSTANCE

    def command(self) -> CommandSet:
        command: CommandSet = {
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
            COMMAND_FIELD: _N_EVENT_REPORT_RQ,
            COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            AFFECTED_SOP_INSTANCE_UID: self.affected_sop_instance_uid,
        }
        if self.event_type_id is not None:
            command[EVENT_TYPE_ID] = self.event_type_id
        return command

    @classmethod
    def from_command(cls, command: CommandSet) -> NEventReportRq:
        return cls(
            _us(command, EVENT_TYPE_ID),
            _text(command, AFFECTED_SOP_CLASS_UID),
            _text(command, AFFECTED_SOP_INSTANCE_UID),
        )


@dataclass(slots=True)
class CEchoRq:
    affected_sop_class_uid: str = VERIFICATION

    def command(self) -> CommandSet:
        return {
            AFFECTED_SOP_CLASS_UID: self.affected_sop_class_uid,
            COMMAND_FIELD: _C_ECHO_RQ,
            COMMAND_DATA_SET_TYPE: NO_DATA_SET,
        }


@dataclass(slots=True)
class Response:
    """Any response (C-STORE-RSP, C-ECHO-RSP, N-ACTION-RSP, N-EVENT-REPORT-RSP): what the
    engine reads of one. ``status`` is None when the peer sent none that fits a US."""

    command_field: int
    message_id_being_responded_to: int | None
    status: int | None

    @classmethod
    def from_command(cls, command: CommandSet) -> Response:
        return cls(
            _us(command, COMMAND_FIELD) or 0,
            _us(command, MESSAGE_ID_BEING_RESPONDED_TO),
            _us(command, STATUS),
        )
