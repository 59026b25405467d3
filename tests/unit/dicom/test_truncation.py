"""A truncated Action Information or Event Information is refused, never read short.

Found by the structure-aware fuzzing (tests/e2e/test_fuzz.py): the fast reader hands what it
cannot read to pydicom, which reads a truncated data set without complaint, so a request cut
in the middle of a UID was committed under another UID (``1.2.3.5`` cut to ``1.2``), one cut
after an item was committed with fewer references, and a report cut the same way made the SCU
record a UID that was never reported. Every cut that is not between top-level elements must be
0212H (mistyped argument) whichever reader decides.
"""

from __future__ import annotations

import itertools
import struct

import pytest

from stgcmt.dicom import codec
from stgcmt.dicom.commitment import (
    CommitmentReport,
    CommitmentRequest,
    FailedReference,
    InvalidRequest,
    Reference,
)
from stgcmt.dicom.elements import MalformedDataset, check_lengths

SC = "1.2.840.10008.5.1.4.1.1.7"
REQUEST = CommitmentRequest("1.2.3.4", [Reference(SC, "1.2.3.5"), Reference(SC, "1.2.3.66")])
REPORT = CommitmentReport(
    "1.2.3.4",
    committed=[Reference(SC, "1.2.3.5.77")],
    failed=[FailedReference(SC, "1.2.3.6.88", 0x0112)],
    retrieve_ae_title="AE",
)


def _top_level_boundaries(data: bytes, implicit: bool) -> set[int]:
    offset, found = 0, {0}
    while offset < len(data):
        if implicit:
            length = struct.unpack_from("<I", data, offset + 4)[0]
            offset += 8 + length
        elif data[offset + 4 : offset + 6] == b"SQ":
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
        found.add(offset)
    return found


@pytest.mark.parametrize("implicit", [True, False])
def test_every_cut_inside_an_element_of_a_request_is_a_mistyped_argument(implicit):
    data = codec.encode_request(REQUEST, implicit)
    boundaries = _top_level_boundaries(data, implicit)
    for cut in range(1, len(data)):
        with pytest.raises(InvalidRequest) as refused:
            codec.decode_request(data[:cut], implicit, True, 100)
        expected = 0x0115 if cut in boundaries else 0x0212  # a shorter, well-formed data set
        assert refused.value.status == expected, cut


@pytest.mark.parametrize("implicit", [True, False])
def test_a_cut_report_is_refused_or_a_well_formed_prefix(implicit):
    data = codec.encode_report(REPORT, implicit)
    boundaries = _top_level_boundaries(data, implicit)
    for cut in range(1, len(data)):
        if cut in boundaries:
            continue
        with pytest.raises(InvalidRequest) as refused:
            codec.decode_report(data[:cut], implicit, True)
        assert refused.value.status == 0x0212, cut


def _item(content: bytes, undefined: bool) -> bytes:
    if undefined:
        return b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + content + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    return b"\xfe\xff\x00\xe0" + struct.pack("<I", len(content)) + content


def _implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, size) + value


@pytest.mark.parametrize("items_undefined", [True, False])
def test_undefined_lengths_read_by_pydicom_are_checked_too(items_undefined):
    """Undefined-length items are not the fast reader's layout: pydicom decides, after the
    check, so a cut there is refused as well."""
    refs = b"".join(
        _item(_implicit(0x00081150, SC.encode() + b"\x00") + _implicit(0x00081155, uid), True)
        for uid in (b"1.2.3.5\x00", b"1.2.3.66")
    ) if items_undefined else b"".join(
        _item(_implicit(0x00081150, SC.encode() + b"\x00") + _implicit(0x00081155, uid), False)
        for uid in (b"1.2.3.5\x00", b"1.2.3.66")
    )  # fmt: skip
    whole = _implicit(0x00081195, b"1.2.3.4\x00") + _implicit(
        0x00081199, refs + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", 0xFFFFFFFF
    )
    assert codec.decode_request(whole, True, True, 100) == REQUEST
    for cut in range(17, len(whole)):
        with pytest.raises(InvalidRequest) as refused:
            codec.decode_request(whole[:cut], True, True, 100)
        assert refused.value.status == 0x0212, cut


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x00\x95\x11",  # a header cut short
        _implicit(0x00081195, b"1.2.3.4\x00", 20),  # a value cut short
        _implicit(0x00081199, _item(b"", False)[:6], 6),  # an item header cut short
        _implicit(0x00081199, _item(_implicit(0x00081150, b"1.2\x00"), False)[:-1]),
        _implicit(0x00081199, _item(b"", True), 0xFFFFFFFF),  # no Sequence Delimitation
        _implicit(0x00081199, b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", 8),  # delimiter, defined
    ],
)
def test_check_lengths_refuses(data):
    with pytest.raises(MalformedDataset):
        check_lengths(data, True, frozenset({0x00081199}))


def test_check_lengths_accepts_what_is_whole():
    fragments = b"".join(_item(bytes(n), False) for n in (0, 4, 6))
    encapsulated = (
        struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)
        + fragments
        + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    )
    unknown = struct.pack("<HH2s2xI", 0x0009, 0x1001, b"UN", 3) + b"\x01\x02\x03"
    for data, implicit in itertools.chain(
        ((codec.encode_request(REQUEST, i), i) for i in (True, False)),
        ((codec.encode_report(REPORT, i), i) for i in (True, False)),
        [(unknown + encapsulated, False)],
    ):
        check_lengths(data, implicit, frozenset({0x00081199, 0x00081198}))
