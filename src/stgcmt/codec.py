"""Storage Commitment datasets encoded and decoded by hand (little endian transfer syntaxes).

A 100,000-reference N-ACTION is 100,000 sequence items: as pydicom Datasets that takes tens of
seconds and hundreds of MB each way. These datasets have a fixed, tiny shape (Transaction UID,
Retrieve AE Title, two sequences of items with two UIDs and maybe a Failure Reason), so they are
written and read here directly, in well under a second. Whatever this reader does not expect
(an unusual encoding, a malformed element) is handed to pydicom, which decides; so the fast path
never changes what a request means, only how quickly it is understood.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from .part10 import MalformedDataset, read_header
from .protocol import (
    MISTYPED_ARGUMENT,
    PROCESSING_FAILURE,
    CommitmentReport,
    CommitmentRequest,
    FailedReference,
    InvalidRequest,
    RawReference,
    Reference,
    build_action_information,
    build_event_information,
    parse_action_information,
    parse_event_information,
    validate_request,
)

RETRIEVE_AE_TITLE = 0x00080054
REFERENCED_SOP_CLASS_UID = 0x00081150
REFERENCED_SOP_INSTANCE_UID = 0x00081155
TRANSACTION_UID = 0x00081195
FAILURE_REASON = 0x00081197
FAILED_SOP_SEQUENCE = 0x00081198
REFERENCED_SOP_SEQUENCE = 0x00081199
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


class _Unexpected(Exception):
    """Something the fast reader does not handle: let pydicom read it."""


# -- encoding ------------------------------------------------------------------------------------


def _element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    if vr == b"SQ":
        return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _sequence(tag: int, refs: Iterable[Reference | FailedReference], implicit: bool) -> bytes:
    items = []
    for ref in refs:
        content = _element(REFERENCED_SOP_CLASS_UID, b"UI", ref.sop_class_uid.encode(), implicit)
        content += _element(
            REFERENCED_SOP_INSTANCE_UID, b"UI", ref.sop_instance_uid.encode(), implicit
        )
        if isinstance(ref, FailedReference):
            content += _element(
                FAILURE_REASON, b"US", struct.pack("<H", ref.failure_reason), implicit
            )
        items.append(struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content)
    return _element(tag, b"SQ", b"".join(items), implicit)


def encode_request(request: CommitmentRequest, implicit: bool) -> bytes:
    """Action Information of an N-ACTION (PS3.4 J.3.2.1.1)."""
    return _element(TRANSACTION_UID, b"UI", request.transaction_uid.encode(), implicit) + _sequence(
        REFERENCED_SOP_SEQUENCE, request.references, implicit
    )


def encode_report(report: CommitmentReport, implicit: bool) -> bytes:
    """Event Information of an N-EVENT-REPORT (PS3.4 J.3.3.1.1), elements in tag order."""
    parts = []
    if report.retrieve_ae_title:
        parts.append(
            _element(RETRIEVE_AE_TITLE, b"AE", report.retrieve_ae_title.encode(), implicit)
        )
    parts.append(_element(TRANSACTION_UID, b"UI", report.transaction_uid.encode(), implicit))
    if report.failed:
        parts.append(_sequence(FAILED_SOP_SEQUENCE, report.failed, implicit))
    if report.committed:
        parts.append(_sequence(REFERENCED_SOP_SEQUENCE, report.committed, implicit))
    return b"".join(parts)


def encode(information: CommitmentRequest | CommitmentReport, implicit: bool) -> bytes:
    if isinstance(information, CommitmentRequest):
        return encode_request(information, implicit)
    return encode_report(information, implicit)


def as_dataset(information: CommitmentRequest | CommitmentReport):  # -> pydicom Dataset
    """The same content as a pydicom Dataset (for engines that encode with pydicom)."""
    if isinstance(information, CommitmentRequest):
        return build_action_information(information)
    return build_event_information(information)


# -- decoding ------------------------------------------------------------------------------------


def _text(data: memoryview, vr_padding: bytes = b"\x00 ") -> str:
    try:
        return bytes(data).decode("ascii").strip(vr_padding.decode())
    except UnicodeDecodeError:
        raise _Unexpected from None


def _elements(data: memoryview, implicit: bool) -> Iterable[tuple[int, memoryview]]:
    """Top-level (tag, value) pairs of a dataset whose sequences have defined lengths or
    undefined lengths with delimiters."""
    offset = 0
    while offset < len(data):
        tag, _, length, offset = read_header(data, offset, implicit)
        if length == _UNDEFINED:
            end = _undefined_end(data, offset, implicit)
            yield tag, data[offset:end]
            offset = end + 8  # past the Sequence Delimitation Item
            continue
        if offset + length > len(data):
            raise MalformedDataset("element is truncated")
        yield tag, data[offset : offset + length]
        offset += length


def _undefined_end(data: memoryview, offset: int, implicit: bool) -> int:
    """Offset of the Sequence Delimitation Item closing an undefined-length sequence."""
    while True:
        tag, _, length, start = read_header(data, offset, True)
        if tag == _SEQUENCE_END:
            return offset
        if tag != _ITEM:
            raise _Unexpected
        if length == _UNDEFINED:
            raise _Unexpected  # undefined-length items: rare here, pydicom handles them
        offset = start + length


def _items(value: memoryview, implicit: bool) -> Iterable[dict[int, memoryview]]:
    offset = 0
    while offset < len(value):
        tag, _, length, start = read_header(value, offset, True)
        if tag != _ITEM or length == _UNDEFINED or start + length > len(value):
            raise _Unexpected
        yield dict(_elements(value[start : start + length], implicit))
        offset = start + length


def _fast_request(data: bytes, implicit: bool) -> tuple[str | None, list[RawReference] | None]:
    found = dict(_elements(memoryview(data), implicit))
    uid = _text(found[TRANSACTION_UID]) if TRANSACTION_UID in found else None
    if REFERENCED_SOP_SEQUENCE not in found:
        return uid, None
    refs: list[RawReference] = [
        (_optional(item, REFERENCED_SOP_CLASS_UID), _optional(item, REFERENCED_SOP_INSTANCE_UID))
        for item in _items(found[REFERENCED_SOP_SEQUENCE], implicit)
    ]
    return uid, refs


def _optional(item: dict[int, memoryview], tag: int) -> str | None:
    return _text(item[tag]) or None if tag in item else None


def decode_request(
    data: bytes | None, implicit: bool, little_endian: bool, max_references: int
) -> CommitmentRequest:
    """The N-ACTION's Action Information, validated; raises :class:`InvalidRequest` with the
    status the requester should get (the same whichever reader understood it)."""
    if not data:
        return parse_action_information(None, max_references)
    if little_endian:
        try:
            uid, refs = _fast_request(data, implicit)
        except (_Unexpected, MalformedDataset, struct.error):
            pass
        else:
            return validate_request(uid, refs, max_references)
    return parse_action_information(_pydicom(data, implicit, little_endian), max_references)


def decode_report(data: bytes | None, implicit: bool, little_endian: bool) -> CommitmentReport:
    """The N-EVENT-REPORT's Event Information; raises :class:`InvalidRequest` if it cannot be
    used (no Transaction UID, undecodable)."""
    if data and little_endian:
        try:
            return _fast_report(data, implicit)
        except (_Unexpected, MalformedDataset, struct.error, KeyError):
            pass
    information = _pydicom(data, implicit, little_endian) if data else None
    return parse_event_information(information)


def _fast_report(data: bytes, implicit: bool) -> CommitmentReport:
    found = dict(_elements(memoryview(data), implicit))
    report = CommitmentReport(_text(found[TRANSACTION_UID]))
    if not report.transaction_uid:
        raise _Unexpected
    if RETRIEVE_AE_TITLE in found:
        report.retrieve_ae_title = _text(found[RETRIEVE_AE_TITLE]) or None
    for item in _items(found.get(REFERENCED_SOP_SEQUENCE, memoryview(b"")), implicit):
        report.committed.append(
            Reference(
                _text(item[REFERENCED_SOP_CLASS_UID]), _text(item[REFERENCED_SOP_INSTANCE_UID])
            )
        )
    for item in _items(found.get(FAILED_SOP_SEQUENCE, memoryview(b"")), implicit):
        reason = item.get(FAILURE_REASON)
        report.failed.append(
            FailedReference(
                _text(item[REFERENCED_SOP_CLASS_UID]),
                _text(item[REFERENCED_SOP_INSTANCE_UID]),
                struct.unpack("<H", reason)[0]
                if reason is not None and len(reason) == 2
                else PROCESSING_FAILURE,
            )
        )
    return report


def _pydicom(data: bytes, implicit: bool, little_endian: bool):  # -> Dataset
    """Decode every element now, so malformed bytes fail here with a status to answer."""
    try:
        ds = read_dataset(DicomBytesIO(data), implicit, little_endian)
        for _ in ds.iterall():
            pass
        return ds
    except Exception as exc:
        raise InvalidRequest(MISTYPED_ARGUMENT, f"cannot decode the data set: {exc}") from exc
