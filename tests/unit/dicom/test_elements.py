"""The one element reader: the VR table, headers in both little endian encodings, undefined
lengths, truncation, and the readers built on it agree with pydicom."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.valuerep import EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32

from stgcmt.dicom.datasets import read_part10_header
from stgcmt.dicom.elements import (
    ITEM,
    ITEM_DELIMITATION,
    LONG_VRS,
    SEQUENCE_DELIMITATION,
    UNDEFINED_LENGTH,
    MalformedDataset,
    UnexpectedLayout,
    flat_items,
    read_header,
    sequence_end,
    skip_undefined,
    tag_text,
)
from stgcmt.dicom.part10 import file_meta

# PS3.5 Table 7.1-1: the VRs with a reserved field and a 4-byte length.
TABLE_7_1_1 = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
SHORT_VRS = sorted(str(vr) for vr in EXPLICIT_VR_LENGTH_16)


def _long(tag: int, vr: bytes, length: int) -> bytes:
    return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr, length)


def _short(tag: int, vr: bytes, length: int) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, length)


def _implicit(tag: int, length: int) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length)


def _encoded(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_the_vr_table_is_ps3_5_table_7_1_1_and_pydicoms():
    assert {vr.decode() for vr in LONG_VRS} == TABLE_7_1_1
    assert {str(vr) for vr in EXPLICIT_VR_LENGTH_32} == TABLE_7_1_1
    assert not TABLE_7_1_1 & set(SHORT_VRS)


@pytest.mark.parametrize("vr", sorted(TABLE_7_1_1))
def test_every_long_vr_has_a_four_byte_length(vr):
    data = _long(0x00091010, vr.encode(), 0x12345) + b"\x00" * 4
    assert read_header(data, 0, False) == (0x00091010, vr.encode(), 0x12345, 12)
    assert read_header(memoryview(data), 0, False) == (0x00091010, vr.encode(), 0x12345, 12)


@pytest.mark.parametrize("vr", sorted(TABLE_7_1_1))
def test_a_long_vr_header_cut_in_its_length_is_truncated(vr):
    data = _long(0x00091010, vr.encode(), 4)
    for cut in range(len(data)):
        with pytest.raises(MalformedDataset, match="truncated"):
            read_header(data[:cut], 0, False)


@pytest.mark.parametrize("vr", SHORT_VRS)
def test_every_other_vr_has_a_two_byte_length(vr):
    data = _short(0x00100020, vr.encode(), 0xFFFE)
    assert read_header(data, 0, False) == (0x00100020, vr.encode(), 0xFFFE, 8)


def test_implicit_headers_have_no_vr_and_a_four_byte_length():
    data = b"junk" + _implicit(0x00081199, UNDEFINED_LENGTH)
    assert read_header(data, 4, True) == (0x00081199, b"", UNDEFINED_LENGTH, 12)


def test_items_and_delimiters_have_no_vr_in_explicit_encoding():
    data = _implicit(ITEM, 0x01020304) + _implicit(SEQUENCE_DELIMITATION, 0)
    assert read_header(data, 0, False) == (ITEM, b"", 0x01020304, 8)
    assert read_header(data, 8, False) == (SEQUENCE_DELIMITATION, b"", 0, 16)


@pytest.mark.parametrize("implicit", [False, True])
def test_a_short_header_is_truncated(implicit):
    data = _short(0x00100020, b"LO", 0)
    for cut in range(8):
        with pytest.raises(MalformedDataset, match="truncated"):
            read_header(data[:cut], 0, implicit)
        with pytest.raises(MalformedDataset):
            read_header(data, 8 - cut + 1, implicit)


def _element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    header = _implicit(tag, len(value)) if implicit else _short(tag, vr, len(value))
    return header + value


def _sequence(tag: int, items: list[bytes], implicit: bool) -> bytes:
    header = _implicit(tag, UNDEFINED_LENGTH) if implicit else _long(tag, b"SQ", UNDEFINED_LENGTH)
    return header + b"".join(items) + _implicit(SEQUENCE_DELIMITATION, 0)


def _undefined_item(content: bytes) -> bytes:
    return _implicit(ITEM, UNDEFINED_LENGTH) + content + _implicit(ITEM_DELIMITATION, 0)


def _nested(implicit: bool) -> bytes:
    """Sequences three deep, of undefined length, with undefined- and defined-length items,
    then Patient ID."""
    leaf = _element(0x00080100, b"SH", b"121322", implicit)
    middle = _sequence(
        0x0040A043, [_undefined_item(leaf), _implicit(ITEM, len(leaf)) + leaf], implicit
    )
    outer = _sequence(0x0040A730, [_undefined_item(middle), _undefined_item(b"")], implicit)
    return _sequence(0x00081110, [_undefined_item(outer)], implicit) + _element(
        0x00100020, b"LO", b"AFTER ", implicit
    )


@pytest.mark.parametrize("implicit", [False, True])
def test_nested_undefined_lengths_are_skipped_whole(implicit):
    data = _nested(implicit)
    tag, _, length, offset = read_header(data, 0, implicit)
    assert (tag, length) == (0x00081110, UNDEFINED_LENGTH)
    after = skip_undefined(data, offset, implicit)
    tag, _, length, offset = read_header(data, after, implicit)
    assert tag == 0x00100020 and data[offset : offset + length].rstrip() == b"AFTER"
    assert offset + length == len(data)


@pytest.mark.parametrize("implicit", [False, True])
def test_truncated_undefined_sequences_are_malformed(implicit):
    data = _nested(implicit)
    start = read_header(data, 0, implicit)[3]
    end = skip_undefined(data, start, implicit)
    for cut in range(start, end):
        with pytest.raises(MalformedDataset):
            skip_undefined(data[:cut], start, implicit)


def test_an_element_running_past_the_end_inside_a_sequence_is_malformed():
    data = _implicit(ITEM, 100) + b"\x00" * 10
    with pytest.raises(MalformedDataset, match="sequence content is truncated"):
        skip_undefined(data, 0, True)


def test_sequence_end_accepts_only_defined_length_items():
    items = _implicit(ITEM, 4) + b"abcd" + _implicit(ITEM, 0)
    data = items + _implicit(SEQUENCE_DELIMITATION, 0)
    assert sequence_end(data, 0) == len(items)
    with pytest.raises(UnexpectedLayout):
        sequence_end(_implicit(ITEM, UNDEFINED_LENGTH) + data, 0)
    with pytest.raises(UnexpectedLayout):
        sequence_end(_implicit(0x00100020, 0) + data, 0)
    with pytest.raises(MalformedDataset):
        sequence_end(items, 0)  # no delimiter
    assert issubclass(UnexpectedLayout, MalformedDataset)


def _item_dataset(i: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    item.ReferencedSOPInstanceUID = f"1.2.3.{i}"
    if i % 2:
        item.FailureReason = 0x0112
    item.add_new(0x00091010, "UV", 2**40 + i)  # a long-form VR inside an item
    return item


@pytest.mark.parametrize("implicit", [False, True])
def test_flat_items_read_what_read_header_reads(implicit):
    ds = Dataset()
    ds.ReferencedSOPSequence = [_item_dataset(i) for i in range(5)]
    data = _encoded(ds, implicit)
    _, _, length, offset = read_header(data, 0, implicit)
    value = data[offset : offset + length]
    items = flat_items(value, implicit)
    assert len(items) == 5
    position = 0
    for found in items:
        _, _, item_length, position = read_header(value, position, True)
        item_end, walked = position + item_length, {}
        while position < item_end:
            tag, _, element_length, position = read_header(value, position, implicit)
            walked[tag] = value[position : position + element_length]
            position += element_length
        assert found == walked
    assert items[1][0x00081197] == b"\x12\x01"
    assert struct.unpack("<Q", items[3][0x00091010]) == (2**40 + 3,)


def test_flat_items_refuse_other_layouts():
    with pytest.raises(UnexpectedLayout):
        flat_items(_implicit(ITEM, UNDEFINED_LENGTH), True)
    with pytest.raises(UnexpectedLayout):
        flat_items(_implicit(0x00081150, 0), True)
    with pytest.raises(UnexpectedLayout):
        flat_items(_implicit(ITEM, 8) + _implicit(0x00081150, UNDEFINED_LENGTH), True)
    with pytest.raises(MalformedDataset, match="item is truncated"):
        flat_items(_implicit(ITEM, 9) + b"\x00" * 8, True)
    with pytest.raises(MalformedDataset, match="item header is truncated"):
        flat_items(b"\xfe\xff\x00\xe0", True)
    with pytest.raises(MalformedDataset, match="item element header is truncated"):
        flat_items(_implicit(ITEM, 4) + b"\x00" * 4, False)
    element = _short(0x00081150, b"UI", 10) + b"1.2"
    with pytest.raises(MalformedDataset, match="item element is truncated"):
        flat_items(_implicit(ITEM, len(element)) + element, False)


def test_tag_text():
    assert tag_text(0x0020000D) == "(0020,000D)"


def _part10(*extra: bytes) -> bytes:
    meta = file_meta("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1")
    return meta + b"".join(extra)


def test_read_part10_header_stops_at_the_data_set():
    f = BytesIO(_part10(_short(0x00100020, b"LO", 2), b"P1"))
    header = read_part10_header(f)
    assert header.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7"
    assert header.sop_instance_uid == "1.2.3.4"
    assert header.transfer_syntax == "1.2.840.10008.1.2.1"
    assert f.read() == _short(0x00100020, b"LO", 2) + b"P1"


def test_read_part10_header_reads_uv_with_its_long_length():
    uv = _long(0x00020100, b"UV", 8) + struct.pack("<Q", 7)
    meta = file_meta("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1")
    f = BytesIO(meta + uv + b"\x10\x00\x20\x00LO\x02\x00P1")
    assert read_part10_header(f).sop_instance_uid == "1.2.3.4"
    assert f.read() == b"\x10\x00\x20\x00LO\x02\x00P1"


def test_read_part10_header_refuses_truncated_and_foreign_files():
    with pytest.raises(ValueError, match="no DICM"):
        read_part10_header(BytesIO(b"\x00" * 132))
    with pytest.raises(MalformedDataset):
        read_part10_header(BytesIO(_part10(_long(0x00020100, b"OB", 2)[:10])))
    meta = b"\x00" * 128 + b"DICM" + _short(0x00020002, b"UI", 4) + b"1.2\x00"
    with pytest.raises(ValueError, match="lacks"):
        read_part10_header(BytesIO(meta))
