"""The one data element reader: the VR table and the element header of the little endian
transfer syntaxes (PS3.5 §7.1), with undefined-length sequences and items skipped whole.

Every hand-written reader in stgcmt (the C-STORE attribute scan, the commitment codec, the
Part 10 File Meta reader) goes through :func:`read_header`, so a VR or a truncation is handled
the same way everywhere; a truncated element always raises :class:`MalformedDataset`.
"""

from __future__ import annotations

import struct
from typing import Final

LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
"""VRs whose explicit VR encoding has 2 reserved bytes and a 4-byte length (PS3.5 Table 7.1-1);
every other VR has a 2-byte length."""

UNDEFINED_LENGTH: Final = 0xFFFFFFFF
ITEM: Final = 0xFFFEE000
ITEM_DELIMITATION: Final = 0xFFFEE00D
SEQUENCE_DELIMITATION: Final = 0xFFFEE0DD

Header = tuple[int, bytes, int, int]
"""(tag, VR or b'' when implicit or a delimiter, value length, offset of the value)."""

_IMPLICIT = struct.Struct("<HHI").unpack_from
_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_LONG_LENGTH = struct.Struct("<I").unpack_from


class MalformedDataset(ValueError):
    """The dataset's encoding is broken (an element runs past the end, for instance)."""


class UnexpectedLayout(MalformedDataset):
    """Well-formed perhaps, but not the layout a strict walk was asked to accept."""


def read_header(data: bytes | memoryview, offset: int, implicit: bool) -> Header:
    """The header of the element at ``offset``: (tag, VR or b'', value length, offset of the
    value). Items and delimiters (group FFFE) have no VR in either encoding. Raises
    :class:`MalformedDataset` if the header runs past the end of ``data``."""
    if offset + 8 > len(data):
        raise MalformedDataset("element header is truncated")
    if implicit:
        group, element, length = _IMPLICIT(data, offset)
        return group << 16 | element, b"", length, offset + 8
    group, element, vr, length = _EXPLICIT(data, offset)
    if group == 0xFFFE:
        return group << 16 | element, b"", _LONG_LENGTH(data, offset + 4)[0], offset + 8
    if vr in LONG_VRS:
        if offset + 12 > len(data):
            raise MalformedDataset("element header is truncated")
        return group << 16 | element, vr, _LONG_LENGTH(data, offset + 8)[0], offset + 12
    return group << 16 | element, vr, length, offset + 8


def skip_undefined(data: bytes | memoryview, offset: int, implicit: bool) -> int:
    """The offset just past the delimiter closing the undefined-length sequence or item whose
    value starts at ``offset``; nested undefined lengths are skipped too."""
    while True:
        tag, _, length, offset = read_header(data, offset, implicit)
        if tag in (SEQUENCE_DELIMITATION, ITEM_DELIMITATION):
            return offset
        if length == UNDEFINED_LENGTH:
            offset = skip_undefined(data, offset, implicit)
        elif offset + length <= len(data):
            offset += length
        else:
            raise MalformedDataset("sequence content is truncated")


def sequence_end(data: bytes | memoryview, offset: int) -> int:
    """The offset of the Sequence Delimitation Item closing the undefined-length sequence
    whose value starts at ``offset``, which must hold only defined-length items (the strict
    layout the commitment codec reads fast); anything else raises :class:`UnexpectedLayout`."""
    while True:
        tag, _, length, start = read_header(data, offset, True)
        if tag == SEQUENCE_DELIMITATION:
            return offset
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise UnexpectedLayout("not a sequence of defined-length items")
        offset = start + length


def flat_items(data: bytes, implicit: bool) -> list[dict[int, bytes]]:
    """The elements of each item of a sequence value made of defined-length items holding
    only defined-length elements (no nested sequences), as ``{tag: value}``.

    The same decoding as :func:`read_header`, inlined: a Storage Commitment request can hold
    100,000 items, and a call per element would cost a fifth of the decoding time. Raises
    :class:`UnexpectedLayout` for anything else (an undefined length, something other than an
    item) and :class:`MalformedDataset` for an element running past its item."""
    items: list[dict[int, bytes]] = []
    offset, end = 0, len(data)
    while offset < end:
        if offset + 8 > end:
            raise MalformedDataset("item header is truncated")
        group, element, length = _IMPLICIT(data, offset)
        if group << 16 | element != ITEM or length == UNDEFINED_LENGTH:
            raise UnexpectedLayout("not a sequence of defined-length items")
        offset += 8
        item_end = offset + length
        if item_end > end:
            raise MalformedDataset("item is truncated")
        found: dict[int, bytes] = {}
        while offset < item_end:
            if offset + 8 > item_end:
                raise MalformedDataset("item element header is truncated")
            if implicit:
                group, element, length = _IMPLICIT(data, offset)
                offset += 8
            else:
                group, element, vr, length = _EXPLICIT(data, offset)
                if group == 0xFFFE:
                    length = _LONG_LENGTH(data, offset + 4)[0]
                    offset += 8
                elif vr in LONG_VRS:
                    length = _LONG_LENGTH(data, offset + 8)[0]
                    offset += 12
                else:
                    offset += 8
            if length == UNDEFINED_LENGTH:
                raise UnexpectedLayout("undefined length inside an item")
            if offset + length > item_end:
                raise MalformedDataset("item element is truncated")
            found[group << 16 | element] = data[offset : offset + length]
            offset += length
        items.append(found)
    return items


def check_lengths(
    data: bytes | memoryview, implicit: bool, sequences: frozenset[int] = frozenset()
) -> None:
    """Raise :class:`MalformedDataset` unless every element, item and sequence of a little
    endian data set lies inside what holds it and every undefined length is closed by its
    delimiter. pydicom reads a truncated data set without complaint (a value cut short is
    returned short, a partial header at the end is ignored), so a request cut in the middle
    of a UID would otherwise mean another UID: readers that fall back to pydicom check this
    first. Sequences are entered when explicit VR says SQ, when their length is undefined, or
    (implicit VR) when their tag is in ``sequences``; other values are opaque."""
    _walk(memoryview(data), 0, implicit, sequences, delimited=False)


def _walk(
    data: memoryview, offset: int, implicit: bool, sequences: frozenset[int], delimited: bool
) -> int:
    """The elements from ``offset`` to the end of ``data`` (or to the Item Delimitation
    closing an undefined-length item, when ``delimited``); the offset just past them."""
    end = len(data)
    while offset < end:
        tag, vr, length, offset = read_header(data, offset, implicit)
        if tag in (ITEM_DELIMITATION, SEQUENCE_DELIMITATION):
            if delimited and tag == ITEM_DELIMITATION:
                return offset
            raise MalformedDataset(f"unexpected delimiter {tag_text(tag)}")
        if length == UNDEFINED_LENGTH:
            fragments = not implicit and vr not in (b"SQ", b"UN")
            if vr == b"UN":  # undefined-length UN holds an implicit VR sequence (PS3.5 6.2.2)
                offset = _walk_items(data, offset, True, sequences, True, fragments)
            else:
                offset = _walk_items(data, offset, implicit, sequences, True, fragments)
            continue
        if offset + length > end:
            raise MalformedDataset(f"element {tag_text(tag)} is truncated")
        if vr == b"SQ" or (implicit and tag in sequences):
            _walk_items(data[: offset + length], offset, implicit, sequences, False, False)
        offset += length
    if delimited:
        raise MalformedDataset("undefined-length item without its delimiter")
    return offset


def _walk_items(
    data: memoryview,
    offset: int,
    implicit: bool,
    sequences: frozenset[int],
    delimited: bool,
    fragments: bool,
) -> int:
    """The items of a sequence value (or the fragments of encapsulated data, not entered)."""
    end = len(data)
    while offset < end:
        tag, _, length, offset = read_header(data, offset, True)
        if tag == SEQUENCE_DELIMITATION and delimited:
            return offset
        if tag != ITEM:
            raise MalformedDataset(f"{tag_text(tag)} where a sequence item belongs")
        if length == UNDEFINED_LENGTH and not fragments:
            offset = _walk(data, offset, implicit, sequences, delimited=True)
            continue
        if offset + length > end:
            raise MalformedDataset("sequence item is truncated")
        if not fragments:
            _walk(data[: offset + length], offset, implicit, sequences, delimited=False)
        offset += length
    if delimited:
        raise MalformedDataset("undefined-length sequence without its delimiter")
    return offset


def tag_text(tag: int) -> str:
    """``(gggg,eeee)``, as the standard writes tags."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


_BIG_EXPLICIT = struct.Struct(">HH2sH").unpack_from
_BIG_LONG_LENGTH = struct.Struct(">I").unpack_from
_IMPLICIT_HEADER = struct.Struct("<HHI").pack
_SHORT_HEADER = struct.Struct("<HH2sH").pack
_LONG_HEADER = struct.Struct("<HH2s2xI").pack


def read_header_big_endian(data: bytes | memoryview, offset: int) -> Header:
    """:func:`read_header` for Explicit VR Big Endian (retired, PS3.5 §A.3): the same
    layout with every tag and length most significant byte first."""
    if offset + 8 > len(data):
        raise MalformedDataset("element header is truncated")
    group, element, vr, length = _BIG_EXPLICIT(data, offset)
    if group == 0xFFFE:
        return group << 16 | element, b"", _BIG_LONG_LENGTH(data, offset + 4)[0], offset + 8
    if vr in LONG_VRS:
        if offset + 12 > len(data):
            raise MalformedDataset("element header is truncated")
        return group << 16 | element, vr, _BIG_LONG_LENGTH(data, offset + 8)[0], offset + 12
    return group << 16 | element, vr, length, offset + 8


def encode_header(tag: int, vr: bytes, length: int, implicit: bool) -> bytes:
    """The little endian header of an element (the writer's side of :func:`read_header`):
    8 bytes when ``implicit`` or for items and delimiters (``vr`` is then ignored), 12 for
    the VRs of :data:`LONG_VRS`, 8 for the others, whose ``length`` must fit 16 bits."""
    if implicit or tag >> 16 == 0xFFFE:
        return _IMPLICIT_HEADER(tag >> 16, tag & 0xFFFF, length)
    if vr in LONG_VRS:
        return _LONG_HEADER(tag >> 16, tag & 0xFFFF, vr, length)
    if length > 0xFFFF:
        raise MalformedDataset(f"{tag_text(tag)} {vr!r}: length {length} needs a 4-byte field")
    return _SHORT_HEADER(tag >> 16, tag & 0xFFFF, vr, length)
