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

_STATUSES: tuple[tuple[int, int, str], ...] = (
    # (first code, last code, words): single codes first, then the ranges PS3.7 Annex C
    # gives a meaning to; the first row that holds a code names it.
    (SUCCESS, SUCCESS, "success"),
    (PROCESSING_FAILURE, PROCESSING_FAILURE, "processing failure"),
    (NO_SUCH_OBJECT_INSTANCE, NO_SUCH_OBJECT_INSTANCE, "no such object instance"),
    (NO_SUCH_ARGUMENT, NO_SUCH_ARGUMENT, "no such argument"),
    (INVALID_ARGUMENT_VALUE, INVALID_ARGUMENT_VALUE, "invalid argument value"),
    (INVALID_OBJECT_INSTANCE, INVALID_OBJECT_INSTANCE, "invalid object instance"),
    (NO_SUCH_SOP_CLASS, NO_SUCH_SOP_CLASS, "no such SOP class"),
    (CLASS_INSTANCE_CONFLICT, CLASS_INSTANCE_CONFLICT, "class-instance conflict"),
    (SOP_CLASS_NOT_SUPPORTED, SOP_CLASS_NOT_SUPPORTED, "referenced SOP class not supported"),
    (NO_SUCH_ACTION_TYPE, NO_SUCH_ACTION_TYPE, "no such action type"),
    (NOT_AUTHORIZED, NOT_AUTHORIZED, "not authorized"),
    (DUPLICATE_TRANSACTION_UID, DUPLICATE_TRANSACTION_UID, "duplicate transaction UID"),
    (MISTYPED_ARGUMENT, MISTYPED_ARGUMENT, "mistyped argument"),
    (RESOURCE_LIMITATION, RESOURCE_LIMITATION, "resource limitation"),
    (OUT_OF_RESOURCES, 0xA7FF, "out of resources"),
    (DATASET_DOES_NOT_MATCH, 0xA9FF, "data set does not match SOP class"),
    (CANNOT_UNDERSTAND, 0xCFFF, "cannot understand"),
    (0xB000, 0xB000, "warning"),  # coercion of data elements
    (0xB006, 0xB006, "warning"),  # elements discarded
    (0xB007, 0xB007, "warning"),  # data set does not match SOP class
)
"""Every status and Failure Reason stgcmt names, with its words."""

_WORDS = {first: words for first, last, words in _STATUSES if first == last}
_RANGES = tuple(row for row in _STATUSES if row[0] != row[1])


def status_words(code: int) -> str:
    """The words for a status or Failure Reason: ``no such object instance`` for 0x0112."""
    words = _WORDS.get(code)
    if words is not None:
        return words
    for first, last, words in _RANGES:
        if first <= code <= last:
            return words
    return "unknown status"


def describe_status(code: int | None) -> str:
    """Render a status or Failure Reason as hex plus words, e.g. ``0x0112 no such object
    instance``, so administrators never have to look numbers up."""
    if code is None:
        return "no status (no response)"
    return f"0x{code:04X} {status_words(code)}"
