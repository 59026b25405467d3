"""DIMSE status codes and Failure Reasons (PS3.7 Annex C, PS3.4 J.3.3.1.1), one table, and
their words, so logs and output read ``0x0112 no such object instance``."""

from __future__ import annotations

# DIMSE status codes (PS3.7 Annex C) used by this service.
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION_TYPE = 0x0123
NO_SUCH_OBJECT_INSTANCE = 0x0112
NO_SUCH_ARGUMENT = 0x0114
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118
CLASS_INSTANCE_CONFLICT = 0x0119
NOT_AUTHORIZED = 0x0124
DUPLICATE_TRANSACTION_UID = 0x0131
RESOURCE_LIMITATION = 0x0213
MISTYPED_ARGUMENT = 0x0212
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

_STATUS_WORDS = {
    SUCCESS: "success",
    PROCESSING_FAILURE: "processing failure",
    NO_SUCH_OBJECT_INSTANCE: "no such object instance",
    NO_SUCH_ARGUMENT: "no such argument",
    INVALID_ARGUMENT_VALUE: "invalid argument value",
    INVALID_OBJECT_INSTANCE: "invalid object instance",
    NO_SUCH_SOP_CLASS: "no such SOP class",
    CLASS_INSTANCE_CONFLICT: "class-instance conflict",
    SOP_CLASS_NOT_SUPPORTED: "referenced SOP class not supported",
    NO_SUCH_ACTION_TYPE: "no such action type",
    NOT_AUTHORIZED: "not authorized",
    DUPLICATE_TRANSACTION_UID: "duplicate transaction UID",
    MISTYPED_ARGUMENT: "mistyped argument",
    RESOURCE_LIMITATION: "resource limitation",
    OUT_OF_RESOURCES: "out of resources",
    DATASET_DOES_NOT_MATCH: "data set does not match SOP class",
    CANNOT_UNDERSTAND: "cannot understand",
}


def describe_status(code: int | None) -> str:
    """Render a status or Failure Reason as hex plus words, e.g. ``0x0112 no such object
    instance``, so administrators never have to look numbers up."""
    if code is None:
        return "no status (no response)"
    words = _STATUS_WORDS.get(code)
    if words is None:
        if 0xA700 <= code <= 0xA7FF:
            words = "out of resources"
        elif 0xA900 <= code <= 0xA9FF:
            words = "data set does not match SOP class"
        elif 0xC000 <= code <= 0xCFFF:
            words = "cannot understand"
        elif code in (0xB000, 0xB006, 0xB007):
            words = "warning"
        else:
            words = "unknown status"
    return f"0x{code:04X} {words}"
