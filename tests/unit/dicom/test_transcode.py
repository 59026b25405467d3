"""Transcoding between the uncompressed transfer syntaxes agrees with pydicom: the same bytes as
pydicom's own write where the VRs agree, the same element values when read back, byte-identical
round trips, and only TranscodeError for broken input."""

from __future__ import annotations

import contextlib
import copy
import struct
import zlib
from array import array
from collections.abc import Callable
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from stgcmt.dicom.elements import (
    ITEM,
    ITEM_DELIMITATION,
    LONG_VRS,
    SEQUENCE_DELIMITATION,
    UNDEFINED_LENGTH,
    MalformedDataset,
    encode_header,
    read_header,
    read_header_big_endian,
)
from stgcmt.dicom.part10 import file_meta
from stgcmt.dicom.transcode import TranscodeError, can_transcode, transcode
from stgcmt.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN as DEFLATED,
)
from stgcmt.dicom.uids import (
    EXPLICIT_VR_BIG_ENDIAN as BIG,
)
from stgcmt.dicom.uids import (
    EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT,
)
from stgcmt.dicom.uids import (
    IMPLICIT_VR_LITTLE_ENDIAN as IMPLICIT,
)
from tests.support.common import make_dataset

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def encode(ds: Dataset, implicit: bool, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


def decode(data: bytes, syntax: str) -> Dataset:
    return dcmread(BytesIO(file_meta("1.2.3", "1.2.3.4", syntax) + data))


def undefined(ds: Dataset) -> Dataset:
    """``ds`` with every sequence and item of undefined length (in place)."""
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
    return ds


# Data sets ------------------------------------------------------------------------------------


def plain() -> Dataset:
    return make_dataset()


def pixels_16() -> Dataset:
    ds = make_dataset()
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = bytes(range(256)) * 2048  # 512 KB
    ds["PixelData"].VR = "OW"
    return ds


def signed() -> Dataset:
    ds = pixels_16()
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5  # "US or SS" -> SS
    ds.LargestImagePixelValue = 300
    ds["SmallestImagePixelValue"].VR = ds["LargestImagePixelValue"].VR = "SS"
    return ds


def numbers() -> Dataset:
    ds = make_dataset()
    ds.AcquisitionMatrix = [0, 256, 256, 0]  # US, 4 values
    ds.add_new(0x00189322, "FD", [0.5, 0.25])
    ds.add_new(0x0018605A, "FL", [1.5, -2.0, 3.25])  # Table of Parameter Values
    ds.FrameIncrementPointer = [0x00181063, 0x00181065]  # AT, 2 values
    ds.add_new(0x00186020, "SL", [-7, 7])
    ds.SimpleFrameList = [1, 2, 3, 0xFFFFFFFF]  # UL
    ds.add_new(0x7FE00008, "OF", struct.pack("<3f", 1.0, 2.0, 3.0))
    ds.add_new(0x00660040, "OL", struct.pack("<2I", 1, 2))
    ds.ImageComments = "text stays text"
    ds.add_new(0x00204000, "LT", "long text " * 9 + "long text.")
    return ds


def sequences() -> Dataset:
    ds = make_dataset()
    inner = [Dataset(), Dataset()]
    inner[0].ReferencedSOPClassUID = "1.2.3"
    inner[0].ReferencedSOPInstanceUID = "1.2.3.4"
    inner[1].ReferencedFrameNumber = "1"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.5"
    series.ReferencedInstanceSequence = Sequence(inner)
    ds.ReferencedSeriesSequence = Sequence([series, Dataset()])  # with an empty item
    ds.OtherPatientIDsSequence = Sequence()  # empty sequence
    deep = Dataset()
    deep.CodeValue, deep.CodingSchemeDesignator, deep.CodeMeaning = "1", "DCM", "deep"
    for _ in range(4):
        wrapper = Dataset()
        wrapper.ConceptNameCodeSequence = Sequence([deep])
        deep = wrapper
    ds.ContentSequence = Sequence([deep])
    return ds


def private() -> Dataset:
    ds = make_dataset()
    known = ds.private_block(0x0009, "ACUSON", create=True)
    known.add_new(0x00, "IS", "12")  # ACUSON (0009,xx00) is IS in pydicom's private dictionary
    unknown = ds.private_block(0x0011, "STGCMT TEST", create=True)
    unknown.add_new(0x01, "LO", "hello")
    unknown.add_new(0x02, "OB", b"\x01\x02\x03\x04")
    return ds


def everything() -> Dataset:
    ds = sequences()
    for extra in (numbers(), private()):
        for elem in extra:
            if elem.tag not in ds:
                ds.add(elem)
    ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[1].update(numbers())
    return ds


PRIVATE_UNKNOWN = {0x00111001, 0x00111002}
"""Private elements no dictionary knows: UN once explicit."""

SAME_VRS = [plain, pixels_16, signed, numbers, sequences]
"""Data sets whose every VR is the one the dictionary gives: pydicom writes the same bytes."""
ALL = [*SAME_VRS, private, everything]


def assert_same(expected: Dataset, got: Dataset, raw: Dataset) -> None:
    """Element by element: values (and VRs, but for private elements no dictionary knows,
    which are UN holding the implicit bytes ``raw`` has)."""
    assert [e.tag for e in got] == [e.tag for e in expected]
    for elem in expected:
        found = got[elem.tag]
        if elem.tag in PRIVATE_UNKNOWN:
            assert found.VR == "UN"
            assert found.value == raw[elem.tag].value
        elif elem.VR == "SQ":
            assert found.VR == "SQ"
            assert len(found.value) == len(elem.value)
            for item, got_item, raw_item in zip(
                elem.value, found.value, raw[elem.tag].value, strict=True
            ):
                assert_same(item, got_item, raw_item)
        else:
            assert (found.VR, found.value) == (elem.VR, elem.value), elem


# Implicit <-> explicit ------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", ["defined", "undefined"])
@pytest.mark.parametrize("make", SAME_VRS)
def test_implicit_to_explicit_writes_what_pydicom_writes(make: Callable[[], Dataset], lengths: str):
    ds = make() if lengths == "defined" else undefined(make())
    assert transcode(encode(ds, True), IMPLICIT, EXPLICIT) == encode(ds, False)


@pytest.mark.parametrize("lengths", ["defined", "undefined"])
@pytest.mark.parametrize("make", ALL)
def test_implicit_to_explicit_reads_back_element_by_element(
    make: Callable[[], Dataset], lengths: str
):
    ds = make() if lengths == "defined" else undefined(make())
    implicit = encode(ds, True)
    explicit = transcode(implicit, IMPLICIT, EXPLICIT)
    assert_same(ds, decode(explicit, EXPLICIT), decode(implicit, IMPLICIT))


@pytest.mark.parametrize("lengths", ["defined", "undefined"])
@pytest.mark.parametrize("make", ALL)
def test_round_trip_is_byte_identical(make: Callable[[], Dataset], lengths: str):
    ds = make() if lengths == "defined" else undefined(make())
    implicit = encode(ds, True)
    explicit = transcode(implicit, IMPLICIT, EXPLICIT)
    assert transcode(explicit, EXPLICIT, IMPLICIT) == implicit


@pytest.mark.parametrize("make", ALL)
def test_explicit_to_implicit_writes_what_pydicom_writes(make: Callable[[], Dataset]):
    ds = make()
    assert transcode(encode(ds, False), EXPLICIT, IMPLICIT) == encode(ds, True)


def test_known_private_element_gets_its_private_dictionary_vr():
    explicit = decode(transcode(encode(private(), True), IMPLICIT, EXPLICIT), EXPLICIT)
    assert explicit[0x00091000].VR == "IS"
    assert explicit[0x00090010].VR == "LO"
    assert explicit[0x00111001].VR == "UN"


def test_private_element_without_its_creator_is_un():
    ds = Dataset()
    ds.add_new(0x00091000, "IS", "12")  # no (0009,0010) creator
    explicit = transcode(encode(ds, True), IMPLICIT, EXPLICIT)
    assert explicit[4:6] == b"UN"


def test_ambiguous_vrs_follow_their_context():
    eight = make_dataset()
    assert decode(transcode(encode(eight, True), IMPLICIT, EXPLICIT), EXPLICIT)["PixelData"].VR == (
        "OB"
    )
    assert decode(transcode(encode(pixels_16(), True), IMPLICIT, EXPLICIT), EXPLICIT)[
        "PixelData"
    ].VR == ("OW")
    unknown_bits = Dataset()
    unknown_bits.PixelData = b"\x00\x01"
    unknown_bits["PixelData"].VR = "OW"
    unknown_bits.add_new(0x60003000, "OW", b"\x00\x01")  # Overlay Data
    assert transcode(encode(unknown_bits, True), IMPLICIT, EXPLICIT) == encode(unknown_bits, False)
    got = decode(transcode(encode(signed(), True), IMPLICIT, EXPLICIT), EXPLICIT)
    assert (got["SmallestImagePixelValue"].VR, got.SmallestImagePixelValue) == ("SS", -5)


def test_pixel_representation_of_the_enclosing_data_set_applies_in_items():
    ds = signed()
    item = Dataset()
    item.SmallestImagePixelValue = -1
    item["SmallestImagePixelValue"].VR = "SS"
    ds.IconImageSequence = Sequence([item])
    got = decode(transcode(encode(ds, True), IMPLICIT, EXPLICIT), EXPLICIT)
    assert got.IconImageSequence[0]["SmallestImagePixelValue"].VR == "SS"


def test_value_too_long_for_a_short_length_becomes_un():
    ds = Dataset()
    ds.SimpleFrameList = list(range(20000))  # UL, 80,000 bytes
    implicit = encode(ds, True)
    explicit = transcode(implicit, IMPLICIT, EXPLICIT)
    assert explicit[:12] == encode_header(0x00081161, b"UN", 80000, False)
    assert decode(explicit, EXPLICIT)[0x00081161].value == struct.pack("<20000I", *range(20000))
    assert transcode(explicit, EXPLICIT, IMPLICIT) == implicit


def test_group_lengths_are_recomputed():
    sequence: list[Element] = [
        (0x00081140, b"SQ", [([(0x00080016, b"UI", b"1.2.", True)], True)], True)
    ]
    group_8: list[Element] = [(0x00080016, b"UI", b"1.2.3.4.", True), *sequence]
    group_10: list[Element] = [(0x00100010, b"PN", b"A^B ", True)]

    def with_lengths(implicit: bool, wrong: bool = False) -> bytes:
        data = b""
        for group, elements in ((0x0008, group_8), (0x0010, group_10)):
            body = build(elements, implicit)
            value = struct.pack("<I", 1234 if wrong else len(body))
            data += encode_header(group << 16, b"UL", 4, implicit) + value + body
        return data

    assert transcode(with_lengths(True), IMPLICIT, EXPLICIT) == with_lengths(False)
    assert transcode(with_lengths(True, wrong=True), IMPLICIT, EXPLICIT) == with_lengths(False)
    assert transcode(with_lengths(False), EXPLICIT, IMPLICIT) == with_lengths(True)


def test_unknown_sequence_of_undefined_length_stays_implicit_inside_un():
    item = encode_header(0x00100020, b"", 4, True) + b"ABCD"
    content = (
        encode_header(ITEM, b"", UNDEFINED_LENGTH, True)
        + item
        + encode_header(ITEM_DELIMITATION, b"", 0, True)
        + encode_header(SEQUENCE_DELIMITATION, b"", 0, True)
    )
    implicit = encode_header(0x00990010, b"", 4, True) + b"NONE"
    implicit += encode_header(0x00991001, b"", UNDEFINED_LENGTH, True) + content
    explicit = transcode(implicit, IMPLICIT, EXPLICIT)
    assert explicit[12:] == encode_header(0x00991001, b"UN", UNDEFINED_LENGTH, False) + content
    assert transcode(explicit, EXPLICIT, IMPLICIT) == implicit
    assert decode(explicit, EXPLICIT)[0x00991001].value[0].PatientID == "ABCD"


# From big endian and deflated -----------------------------------------------------------------


def big_endian_input(ds: Dataset) -> bytes:
    """pydicom writes raw OW/OF/OL bytes as they are: swap them first, as a big endian
    writer holding the same values would have them."""
    swapped = copy.deepcopy(ds)
    for elem in swapped.iterall():
        code = {"OW": "H", "OF": "I", "OL": "I"}.get(elem.VR)
        if code and isinstance(elem.value, bytes):
            units = array(code, elem.value)
            units.byteswap()
            elem.value = units.tobytes()
    return encode(swapped, False, little=False)


@pytest.mark.parametrize("make", ALL)
def test_big_endian_to_little_endian_writes_what_pydicom_writes(make: Callable[[], Dataset]):
    ds = make()
    big = big_endian_input(ds)
    assert transcode(big, BIG, EXPLICIT) == encode(ds, False)
    assert transcode(big, BIG, IMPLICIT) == encode(ds, True)


@pytest.mark.parametrize("make", ALL)
def test_deflated_to_little_endian(make: Callable[[], Dataset]):
    ds = make()
    deflated = deflate(encode(ds, False))
    assert transcode(deflated, DEFLATED, EXPLICIT) == encode(ds, False)
    assert transcode(deflated, DEFLATED, IMPLICIT) == encode(ds, True)


def test_encapsulated_pixel_data_big_endian_to_little_endian():
    fragments = encode_header(ITEM, b"", 0, True) + encode_header(ITEM, b"", 4, True) + b"abcd"
    le = encode_header(0x7FE00010, b"OB", UNDEFINED_LENGTH, False) + fragments
    le += encode_header(SEQUENCE_DELIMITATION, b"", 0, True)
    be = struct.pack(">HH2s2xI", 0x7FE0, 0x0010, b"OB", UNDEFINED_LENGTH)
    be += struct.pack(">HHI", 0xFFFE, 0xE000, 0) + struct.pack(">HHI", 0xFFFE, 0xE000, 4) + b"abcd"
    be += struct.pack(">HHI", 0xFFFE, 0xE0DD, 0)
    assert transcode(be, BIG, EXPLICIT) == le
    with pytest.raises(TranscodeError, match="7FE0,0010"):
        transcode(le, EXPLICIT, IMPLICIT)


def test_supported_pairs():
    assert can_transcode(IMPLICIT, EXPLICIT) and can_transcode(BIG, IMPLICIT)
    assert can_transcode(DEFLATED, EXPLICIT) and can_transcode(JPEG_BASELINE, JPEG_BASELINE)
    assert not can_transcode(EXPLICIT, BIG) and not can_transcode(EXPLICIT, DEFLATED)
    assert not can_transcode(JPEG_BASELINE, EXPLICIT)
    with pytest.raises(TranscodeError, match="cannot transcode"):
        transcode(b"", EXPLICIT, BIG)
    data = encode(plain(), False)
    assert transcode(data, EXPLICIT, EXPLICIT) == data


def test_headers_helpers_agree_with_the_reader():
    for vr in (b"US", b"OB", b"SQ", b"UN", b"LO"):
        header = encode_header(0x00100020, vr, 6, False)
        assert read_header(header + bytes(6), 0, False)[:3] == (0x00100020, vr, 6)
        big = (
            struct.pack(">HH2s2xI", 0x0010, 0x0020, vr, 6)
            if vr in LONG_VRS
            else struct.pack(">HH2sH", 0x0010, 0x0020, vr, 6)
        )
        assert read_header_big_endian(big, 0)[:3] == (0x00100020, vr, 6)
    with pytest.raises(MalformedDataset):
        encode_header(0x00100020, b"LO", 0x10000, False)


# Broken input ---------------------------------------------------------------------------------


def broken_inputs() -> list[tuple[str, bytes]]:
    ds = everything()
    ds.PixelData = bytes(40)
    implicit = encode(undefined(everything()), True)
    return [
        (IMPLICIT, encode(ds, True)),
        (IMPLICIT, implicit),
        (EXPLICIT, encode(ds, False)),
        (BIG, big_endian_input(ds)),
        (DEFLATED, deflate(encode(ds, False))),
    ]


@pytest.mark.parametrize(
    "syntax, data", broken_inputs(), ids=["imp", "imp-undef", "exp", "be", "defl"]
)
def test_truncations_raise_transcode_error_only(syntax: str, data: bytes):
    target = EXPLICIT if syntax == IMPLICIT else IMPLICIT
    raised = 0
    for cut in range(len(data)):
        try:
            transcode(data[:cut], syntax, target)
        except TranscodeError as exc:
            raised += 1
            assert str(exc)
    assert raised > len(data) // 2


@pytest.mark.parametrize("syntax, data", broken_inputs()[:4], ids=["imp", "imp-undef", "exp", "be"])
def test_corrupted_bytes_raise_transcode_error_only(syntax: str, data: bytes):
    target = EXPLICIT if syntax == IMPLICIT else IMPLICIT
    for position in range(0, len(data), 3):
        for byte in (0x00, 0xFF, 0xE0):
            corrupted = bytearray(data)
            corrupted[position] = byte
            with contextlib.suppress(TranscodeError):
                transcode(bytes(corrupted), syntax, target)


def test_errors_name_the_element():
    data = encode(plain(), True)
    with pytest.raises(TranscodeError, match=r"\(7FE0,0010\).*runs past the end"):
        transcode(data[:-1], IMPLICIT, EXPLICIT)
    with pytest.raises(TranscodeError, match="inflate"):
        transcode(b"not deflated", DEFLATED, EXPLICIT)
    odd = struct.pack(">HH2sH", 0x0028, 0x0010, b"US", 3) + b"abc"
    with pytest.raises(TranscodeError, match=r"\(0028,0010\).*3-byte"):
        transcode(odd, BIG, EXPLICIT)


def test_deep_nesting_is_an_error_not_a_crash():
    sq = encode_header(0x00081140, b"", UNDEFINED_LENGTH, True)
    item = encode_header(ITEM, b"", UNDEFINED_LENGTH, True)
    data = (sq + item) * 5000
    with pytest.raises(TranscodeError):
        transcode(data, IMPLICIT, EXPLICIT)
    un = encode_header(0x00991001, b"", UNDEFINED_LENGTH, True)
    with pytest.raises(TranscodeError):
        transcode((un + item) * 5000, IMPLICIT, EXPLICIT)


# Random element lists ----------------------------------------------------------------------------

PUBLIC = [
    (0x00080016, b"UI"),
    (0x00080020, b"DA"),
    (0x00100010, b"PN"),
    (0x00181310, b"US"),
    (0x00186020, b"SL"),
    (0x00189322, b"FD"),
    (0x00200032, b"DS"),
    (0x00280009, b"AT"),
    (0x00081161, b"UL"),
    (0x00204000, b"LT"),
    (0x7FE00008, b"OF"),
    (0x00990001, b"UN"),  # private, no creator
]
SEQUENCE_TAGS = [0x00081115, 0x00081140, 0x0040A730]

Element = tuple[int, bytes, object, bool]
"""(tag, VR, value bytes or a list of items (each a list of elements), defined length)."""

values = st.one_of(
    st.binary(max_size=12).map(lambda b: b + b"\x00" * (len(b) % 2)),
    st.just(bytes(0x10000)),
)


def element_lists(depth: int) -> st.SearchStrategy[list[Element]]:
    plain_elements = st.tuples(st.sampled_from(PUBLIC), values, st.booleans()).map(
        lambda t: (t[0][0], t[0][1], t[1], t[2])
    )
    options: list[st.SearchStrategy[Element]] = [plain_elements]
    if depth:
        item = st.tuples(element_lists(depth - 1), st.booleans())
        options.append(
            st.tuples(
                st.sampled_from(SEQUENCE_TAGS), st.lists(item, max_size=3), st.booleans()
            ).map(lambda t: (t[0], b"SQ", t[1], t[2]))
        )
    return st.lists(st.one_of(options), max_size=6).map(
        lambda elements: sorted({e[0]: e for e in elements}.values(), key=lambda e: e[0])
    )


def build(elements: list[Element], implicit: bool) -> bytes:
    out = b""
    for tag, vr, value, defined in elements:
        if vr == b"SQ":
            assert isinstance(value, list)
            body = b""
            for item, item_defined in value:
                content = build(item, implicit)
                if item_defined:
                    body += encode_header(ITEM, b"", len(content), True) + content
                else:
                    body += encode_header(ITEM, b"", UNDEFINED_LENGTH, True) + content
                    body += encode_header(ITEM_DELIMITATION, b"", 0, True)
            if defined:
                out += encode_header(tag, vr, len(body), implicit) + body
            else:
                out += encode_header(tag, vr, UNDEFINED_LENGTH, implicit) + body
                out += encode_header(SEQUENCE_DELIMITATION, b"", 0, True)
        else:
            assert isinstance(value, bytes)
            if len(value) > 0xFFFE and vr not in LONG_VRS:
                vr = b"UN"
            out += encode_header(tag, vr, len(value), implicit) + value
    return out


@settings(max_examples=200, derandomize=True, deadline=None)
@given(element_lists(2))
def test_random_element_lists_round_trip(elements: list[Element]):
    implicit, explicit = build(elements, True), build(elements, False)
    assert transcode(implicit, IMPLICIT, EXPLICIT) == explicit
    assert transcode(explicit, EXPLICIT, IMPLICIT) == implicit
