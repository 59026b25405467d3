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
from collections.abc import Callable, Iterable
from typing import BinaryIO, cast

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from stgcmt.dicom.commitment import (
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
from stgcmt.dicom.elements import (
    UNDEFINED_LENGTH,
    MalformedDataset,
    check_lengths,
    flat_items,
    read_header,
    sequence_end,
)
from stgcmt.dicom.status import MISTYPED_ARGUMENT, PROCESSING_FAILURE

RETRIEVE_AE_TITLE = 0x00080054
REFERENCED_SOP_CLASS_UID = 0x00081150
REFERENCED_SOP_INSTANCE_UID = 0x00081155
TRANSACTION_UID = 0x00081195
FAILURE_REASON = 0x00081197
FAILED_SOP_SEQUENCE = 0x00081198
REFERENCED_SOP_SEQUENCE = 0x00081199


class _Unexpected(Exception):
    """Something the fast reader does not handle: let pydicom read it."""


# -- encoding ------------------------------------------------------------------------------------


_SHORT, _LONG = struct.Struct("<H").pack, struct.Struct("<I").pack
_ITEM_TAG = struct.pack("<HH", 0xFFFE, 0xE000)


def _header(tag: int, vr: bytes, implicit: bool) -> bytes:
    """An element's tag (and VR) before its length."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HH", group, element)
    if vr == b"SQ":
        return struct.pack("<HH2s2x", group, element, vr)
    return struct.pack("<HH2s", group, element, vr)


def _length(vr: bytes, implicit: bool) -> Callable[[int], bytes]:
    """The packer of the element's length field."""
    return _LONG if implicit or vr == b"SQ" else _SHORT


def _element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    return _header(tag, vr, implicit) + _length(vr, implicit)(len(value)) + value


def _uid(value: str) -> bytes:
    encoded = value.encode()
    return encoded + b"\x00" if len(encoded) % 2 else encoded


def _sequence(tag: int, refs: Iterable[Reference | FailedReference], implicit: bool) -> bytes:
    """One item per reference; headers are built once, the loop only joins bytes (100,000
    items take a fraction of a second)."""
    length = _length(b"UI", implicit)
    sop_class = _header(REFERENCED_SOP_CLASS_UID, b"UI", implicit)
    sop_instance = _header(REFERENCED_SOP_INSTANCE_UID, b"UI", implicit)
    failure_reason = _header(FAILURE_REASON, b"US", implicit) + length(2)
    items = []
    for ref in refs:
        class_uid, instance_uid = _uid(ref.sop_class_uid), _uid(ref.sop_instance_uid)
        content = (
            sop_class + length(len(class_uid)) + class_uid
            + sop_instance + length(len(instance_uid)) + instance_uid
        )  # fmt: skip
        if isinstance(ref, FailedReference):
            content += failure_reason + _SHORT(ref.failure_reason)
        items.append(_ITEM_TAG + _LONG(len(content)) + content)
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


def as_dataset(information: CommitmentRequest | CommitmentReport) -> Dataset:
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
        if length == UNDEFINED_LENGTH:
            end = sequence_end(data, offset)
            yield tag, data[offset:end]
            offset = end + 8  # past the Sequence Delimitation Item
            continue
        if offset + length > len(data):
            raise MalformedDataset("element is truncated")
        yield tag, data[offset : offset + length]
        offset += length


RawItem = tuple[str | None, str | None, int | None]


def _items(value: memoryview, implicit: bool) -> list[RawItem]:
    """(class UID, instance UID, Failure Reason) of each defined-length item: a tight loop, as
    a request can hold 100,000 of them."""
    return [
        (
            _ascii(found.get(REFERENCED_SOP_CLASS_UID)),
            _ascii(found.get(REFERENCED_SOP_INSTANCE_UID)),
            None
            if (reason := found.get(FAILURE_REASON)) is None or len(reason) != 2
            else _SHORT_AT(reason, 0)[0],
        )
        for found in flat_items(bytes(value), implicit)
    ]


def _ascii(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("ascii").strip("\x00 ") or None
    except UnicodeDecodeError:
        raise _Unexpected from None


_SHORT_AT = struct.Struct("<H").unpack_from


def _fast_request(data: bytes, implicit: bool) -> tuple[str | None, list[RawReference] | None]:
    found = dict(_elements(memoryview(data), implicit))
    uid = _text(found[TRANSACTION_UID]) if TRANSACTION_UID in found else None
    if REFERENCED_SOP_SEQUENCE not in found:
        return uid, None
    refs: list[RawReference] = [
        (sop_class, sop_instance)
        for sop_class, sop_instance, _ in _items(found[REFERENCED_SOP_SEQUENCE], implicit)
    ]
    return uid, refs


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
    for sop_class, sop_instance, _ in _items(found.get(REFERENCED_SOP_SEQUENCE, _EMPTY), implicit):
        report.committed.append(Reference(_required(sop_class), _required(sop_instance)))
    for sop_class, sop_instance, reason in _items(found.get(FAILED_SOP_SEQUENCE, _EMPTY), implicit):
        report.failed.append(
            FailedReference(
                _required(sop_class),
                _required(sop_instance),
                PROCESSING_FAILURE if reason is None else reason,
            )
        )
    return report


_EMPTY = memoryview(b"")
_SEQUENCES = frozenset({REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE})


def _required(value: str | None) -> str:
    if value is None:
        raise _Unexpected  # let pydicom's reader report what is missing
    return value


def _pydicom(data: bytes, implicit: bool, little_endian: bool) -> Dataset:
    """Decode every element now, so malformed bytes fail here with a status to answer. A
    truncated little endian data set is refused first: pydicom would read it short (a UID cut
    in the middle is another valid UID, a sequence cut after an item has fewer references)."""
    try:
        if little_endian:
            check_lengths(data, implicit, _SEQUENCES)
        ds = read_dataset(cast(BinaryIO, DicomBytesIO(data)), implicit, little_endian)
        for _ in ds.iterall():
            pass
        return ds
    except Exception as exc:
        raise InvalidRequest(MISTYPED_ARGUMENT, f"cannot decode the data set: {exc}") from exc
