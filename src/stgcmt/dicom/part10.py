"""The receive hot path's two pieces of DICOM encoding, by hand: File Meta Information for a
received dataset, and the few top-level attributes the index needs.

pydicom costs ~1 ms per instance for these two jobs (building a FileMetaDataset, then
``dcmread`` with ``specific_tags``); the hand-written versions take microseconds. They handle
the little endian transfer syntaxes (nearly all traffic); anything else is read with pydicom.
"""

from __future__ import annotations

import struct
from io import BytesIO

from stgcmt.dicom.elements import (
    LONG_VRS,
    UNDEFINED_LENGTH,
    MalformedDataset,
    read_header,
    skip_undefined,
    tag_text,
)
from stgcmt.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

__all__ = ["MalformedDataset", "file_meta", "index_attributes", "scanned_attributes"]

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
PATIENT_ID = 0x00100020
INDEX_TAGS = (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, PATIENT_ID)
IDENTITY_TAGS = (SOP_CLASS_UID, SOP_INSTANCE_UID)
SCANNED_TAGS = (*IDENTITY_TAGS, *INDEX_TAGS)
_SCANNED = frozenset(SCANNED_TAGS)
_LAST_INDEX_TAG = max(SCANNED_TAGS)


def _element(tag_group: int, tag_element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    if vr in LONG_VRS:
        return struct.pack("<HH2s2xI", tag_group, tag_element, vr, len(value)) + value
    return struct.pack("<HH2sH", tag_group, tag_element, vr, len(value)) + value


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, 'DICM' and the File Meta Information group (PS3.10 7.1), explicit VR LE."""
    elements = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", sop_class_uid.encode()),
            _element(0x0002, 0x0003, b"UI", sop_instance_uid.encode()),
            _element(0x0002, 0x0010, b"UI", transfer_syntax.encode()),
            _element(0x0002, 0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode()),
            _element(0x0002, 0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode()),
        )
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements))
    return b"\x00" * 128 + b"DICM" + group_length + elements


def index_attributes(dataset: bytes, transfer_syntax: str) -> tuple[str | None, ...]:
    """(Study Instance UID, Series Instance UID, Patient ID), each None if absent. Raises
    :class:`MalformedDataset` if the elements before them are broken."""
    return scanned_attributes(dataset, transfer_syntax)[len(IDENTITY_TAGS) :]


def scanned_attributes(dataset: bytes, transfer_syntax: str) -> tuple[str | None, ...]:
    """(SOP Class UID, SOP Instance UID, Study Instance UID, Series Instance UID, Patient ID),
    each None if absent, in one walk: the SCP checks the data set's identity against the
    command's with the same pass that reads what the index needs. Raises
    :class:`MalformedDataset` if the elements before them are broken."""
    if transfer_syntax in (EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN):
        return _index_attributes_with_pydicom(dataset, transfer_syntax)
    found = _scan(memoryview(dataset), transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN)
    return tuple(found.get(tag) for tag in SCANNED_TAGS)


def _scan(data: memoryview, implicit: bool) -> dict[int, str | None]:
    """Walk top-level elements up to the last tag we want; sequences are skipped whole."""
    found: dict[int, str | None] = {}
    offset, end = 0, len(data)
    while offset < end:
        tag, vr, length, offset = read_header(data, offset, implicit)
        if tag > _LAST_INDEX_TAG:
            break
        if length == UNDEFINED_LENGTH:
            offset = skip_undefined(data, offset, implicit)
            continue
        if offset + length > end:
            raise MalformedDataset(f"element {tag_text(tag)} is truncated")
        if tag in _SCANNED:
            text = bytes(data[offset : offset + length]).decode("ascii", "replace")
            found[tag] = text.strip(" \x00") or None
        offset += length
    return found


def _index_attributes_with_pydicom(dataset: bytes, transfer_syntax: str) -> tuple[str | None, ...]:
    """The :func:`scanned_attributes` of big endian and deflated data sets (rare traffic);
    pydicom imported for them only (``stgcmt send`` scans with this module)."""
    from pydicom import dcmread

    content = file_meta("1.2.3", "1.2.3", transfer_syntax) + dataset
    try:
        ds = dcmread(BytesIO(content), stop_before_pixels=True, specific_tags=list(SCANNED_TAGS))
        return tuple(_text(ds.get(tag)) for tag in SCANNED_TAGS)
    except Exception as exc:
        raise MalformedDataset(f"dataset cannot be parsed: {exc}") from exc


def _text(element: object) -> str | None:
    """An element's value as the hand-written scan reports it: stripped, None if empty."""
    value = getattr(element, "value", None)
    if value in ("", None):
        return None
    return str(value).strip(" \x00") or None
