"""Transcoding an encoded data set (no File Meta) between the uncompressed transfer syntaxes.

:func:`transcode` rewrites element headers and, from big endian, byte-swaps values; values are
never decoded (Pixel Data is copied byte for byte), so it costs a header rewrite per element
and a memory copy of the values. Supported:

* Implicit VR Little Endian ↔ Explicit VR Little Endian;
* Explicit VR Big Endian and Deflated Explicit VR Little Endian → either of those two.

Choices, per PS3.5:

* Implicit → explicit takes VRs from pydicom's data dictionary (cached per tag): group lengths
  (gggg,0000) are UL, private creators (gggg,0010-00FF) LO, private elements take the VR of
  pydicom's private dictionary for their creator, else UN; unknown public tags are UN.
* Ambiguous dictionary VRs, from the data set being written (nearest item first, then its
  ancestors, as pydicom does): "US or SS" is SS when Pixel Representation (0028,0103) is 1,
  else US; Pixel Data "OB or OW" is OB when Bits Allocated (0028,0100) is 8 or less, OW when
  it is larger or absent (OW is always a correct reading of implicit, PS3.5 §A.1); Waveform
  (5400,xxxx) "OB or OW" likewise by Waveform Bits Allocated (5400,1004); every other
  "OB or OW" (overlays, curves, audio) is OW; "US or OW" LUT Data is US for a single entry
  (2 bytes, PS3.3 C.11.1.1.1) else OW; "US or SS or OW" is OW.
* A value longer than 65534 bytes under a VR with a 2-byte length field is written as UN
  (PS3.5 §6.2.2: UN is the VR to use when the value does not fit), not rejected.
* An implicit element of undefined length whose VR is unknown is an unknown sequence: it is
  written as UN of undefined length with its content unchanged, which PS3.5 §6.2.2 requires
  to be Implicit VR Little Endian anyway. UN of undefined length from an explicit source is
  copied the same way (its content is implicit already).
* Explicit → implicit drops the VRs; a UN value is kept as it is, whatever its dictionary VR.
* Sequences and items keep their length form: undefined stays undefined (delimiters are the
  same in both encodings), a defined length is recomputed from what was written. Group
  lengths are recomputed too. So a defined-length implicit data set comes back byte for byte
  after implicit → explicit → implicit.
* Big endian values are swapped by VR (US SS OW AT by 2 bytes, UL SL FL OF OL by 4, FD OD SV UV
  OV by 8); text, OB and UN are unchanged.

Broken input raises :class:`TranscodeError` (a :class:`MalformedDataset`, so a ValueError),
naming the element; unsupported transfer syntaxes raise it too (see :func:`can_transcode`).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Callable
from functools import lru_cache
from typing import Final

from pydicom.datadict import dictionary_VR, private_dictionary_VR

from stgcmt.dicom.elements import (
    ITEM,
    ITEM_DELIMITATION,
    LONG_VRS,
    SEQUENCE_DELIMITATION,
    UNDEFINED_LENGTH,
    Header,
    MalformedDataset,
    encode_header,
    read_header,
    read_header_big_endian,
    skip_undefined,
    tag_text,
)
from stgcmt.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

__all__ = ["TranscodeError", "can_transcode", "transcode"]

SOURCES: Final = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)
TARGETS: Final = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})

PIXEL_DATA: Final = 0x7FE00010
BITS_ALLOCATED: Final = 0x00280100
PIXEL_REPRESENTATION: Final = 0x00280103
WAVEFORM_BITS_ALLOCATED: Final = 0x54001004
_CONTEXT_TAGS: Final = frozenset({BITS_ALLOCATED, PIXEL_REPRESENTATION, WAVEFORM_BITS_ALLOCATED})
MAX_SHORT_LENGTH: Final = 0xFFFE
"""The longest (even) value a 2-byte length field holds; longer ones are written as UN."""
MAX_DEPTH: Final = 64
"""Sequences nested deeper are refused (real data sets nest a handful deep)."""

_SWAP: Final = {
    **dict.fromkeys((b"US", b"SS", b"OW", b"AT"), "H"),
    **dict.fromkeys((b"UL", b"SL", b"FL", b"OF", b"OL"), "I"),
    **dict.fromkeys((b"FD", b"OD", b"SV", b"UV", b"OV"), "Q"),
}
"""Big endian VRs whose value is swapped, with the array type code of their unit."""
assert all(array(code).itemsize == size for code, size in (("H", 2), ("I", 4), ("Q", 8)))

_UL, _LO, _UN, _SQ, _OB, _OW, _US, _SS = b"UL", b"LO", b"UN", b"SQ", b"OB", b"OW", b"US", b"SS"
_LENGTH = struct.Struct("<I")


class TranscodeError(MalformedDataset):
    """The data set cannot be transcoded: its encoding is broken (the message names the
    element), or the transfer syntaxes are not a supported pair."""


def can_transcode(from_syntax: str, to_syntax: str) -> bool:
    """Whether :func:`transcode` handles this pair (the same syntax twice included)."""
    return from_syntax == to_syntax or (from_syntax in SOURCES and to_syntax in TARGETS)


def transcode(data_set: bytes, from_syntax: str, to_syntax: str) -> bytes:
    """``data_set`` (encoded in ``from_syntax``, without File Meta) encoded in ``to_syntax``.

    The same syntax twice returns the bytes unchanged (not checked). Raises
    :class:`TranscodeError` for broken input or an unsupported pair."""
    if from_syntax == to_syntax:
        return bytes(data_set)
    if not can_transcode(from_syntax, to_syntax):
        raise TranscodeError(f"cannot transcode from {from_syntax} to {to_syntax}")
    if from_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        try:
            data_set = zlib.decompress(data_set, -15)
        except zlib.error as exc:
            raise TranscodeError(f"the deflated data set does not inflate: {exc}") from None
        from_syntax = EXPLICIT_VR_LITTLE_ENDIAN
        if from_syntax == to_syntax:
            return data_set
    return _Transcoder(
        data_set,
        implicit=from_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
        big_endian=from_syntax == EXPLICIT_VR_BIG_ENDIAN,
        to_implicit=to_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
    ).run()


@lru_cache(maxsize=4096)
def _public_vr(tag: int) -> bytes:
    """The dictionary VR of a public tag (b'US or SS' for an ambiguous one), UN if unknown."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return _UN
    return vr.encode() if vr and vr != "NONE" else _UN


@lru_cache(maxsize=4096)
def _private_vr(group: int, element: int, creator: str) -> bytes:
    """The private dictionary VR of (group, xx``element``) for ``creator``, UN if unknown."""
    try:
        vr = private_dictionary_VR(group << 16 | 0x1000 | element, creator)
    except KeyError:
        return _UN
    return vr.encode() if vr and vr != "NONE" else _UN


class _Level:
    """What an implicit VR choice needs from the data set being read (an item or the top):
    values inherited from the enclosing data sets, and the private creators of this one."""

    __slots__ = ("bits_allocated", "creators", "depth", "pixel_representation", "waveform_bits")

    def __init__(self, parent: _Level | None = None) -> None:
        self.bits_allocated: int = parent.bits_allocated if parent else -1
        self.pixel_representation: int = parent.pixel_representation if parent else -1
        self.waveform_bits: int = parent.waveform_bits if parent else -1
        self.creators: dict[int, str] = {}
        self.depth: int = parent.depth + 1 if parent else 0
        if self.depth > MAX_DEPTH:
            raise TranscodeError(f"sequences are nested more than {MAX_DEPTH} deep")


class _Transcoder:
    def __init__(self, data: bytes, *, implicit: bool, big_endian: bool, to_implicit: bool):
        self.src = memoryview(data)
        self.out = bytearray()
        self.implicit = implicit
        self.big_endian = big_endian
        self.to_implicit = to_implicit
        self.header: Callable[[memoryview, int, bool], Header] = (
            _read_big_endian if big_endian else read_header
        )

    def run(self) -> bytes:
        self.elements(0, len(self.src), False, _Level(), 0)
        return bytes(self.out)

    def read(self, offset: int, after: int, where: int) -> Header:
        try:
            return self.header(self.src, offset, self.implicit)
        except MalformedDataset:
            raise TranscodeError(
                f"the element header at offset {offset} ({_after(after, where)}) is truncated"
            ) from None

    def elements(self, offset: int, end: int, undefined: bool, level: _Level, where: int) -> int:
        """Write the elements of a data set (the top one, or an item of the sequence
        ``where``) from ``offset``; return the offset past it (past its delimiter)."""
        out, to_implicit, implicit, src, header = (
            self.out,
            self.to_implicit,
            self.implicit,
            self.src,
            self.header,
        )
        group_length: tuple[int, int] | None = None  # (group, offset of its value in out)
        last = 0
        while offset < end:
            try:
                tag, vr, length, value = header(src, offset, implicit)
            except MalformedDataset:
                tag, vr, length, value = self.read(offset, last, where)  # raises the error
            if group_length is not None and tag >> 16 != group_length[0]:
                self.patch_group_length(group_length[1])
                group_length = None
            if tag >> 16 == 0xFFFE:
                if tag == ITEM_DELIMITATION and undefined:
                    out += encode_header(ITEM_DELIMITATION, b"", 0, True)
                    return value
                raise TranscodeError(f"unexpected {tag_text(tag)} {_after(last, where)}")
            if length == UNDEFINED_LENGTH:
                if implicit:
                    vr = self.implicit_vr(tag, value, value, length, level)
                offset = self.undefined(tag, vr, value, end, level)
                last = tag
                continue
            stop = value + length
            if stop > end:
                raise TranscodeError(
                    f"{tag_text(tag)}: its {length}-byte value runs past the end of "
                    f"{'the data set' if not where else 'its item in ' + tag_text(where)}"
                )
            if implicit:
                vr = self.implicit_vr(tag, value, stop, length, level)
            if vr == _SQ:
                out += encode_header(tag, _SQ, 0, to_implicit)
                start = len(out)
                self.sequence(value, stop, False, level, tag)
                self.patch_length(start, tag)
            else:
                out += encode_header(tag, vr, length, to_implicit)
                if self.big_endian and vr in _SWAP:
                    out += _swapped(self.src[value:stop], _SWAP[vr], tag)
                else:
                    out += src[value:stop]
                if tag & 0xFFFF == 0 and length == 4:
                    group_length = tag >> 16, len(out) - 4
            offset = stop
            last = tag
        if undefined:
            raise TranscodeError(
                f"the item of {tag_text(where)} has no Item Delimitation ({_after(last, where)})"
            )
        if group_length is not None:
            self.patch_group_length(group_length[1])
        return offset

    def sequence(self, offset: int, end: int, undefined: bool, level: _Level, tag: int) -> int:
        """Write the items of the sequence ``tag`` from ``offset``; return the offset past it."""
        out = self.out
        while offset < end:
            item, _, length, value = self.read(offset, 0, tag)
            if item == SEQUENCE_DELIMITATION and undefined:
                out += encode_header(SEQUENCE_DELIMITATION, b"", 0, True)
                return value
            if item != ITEM:
                raise TranscodeError(f"{tag_text(tag)}: {tag_text(item)} where an item should be")
            if length == UNDEFINED_LENGTH:
                out += encode_header(ITEM, b"", UNDEFINED_LENGTH, True)
                offset = self.elements(value, end, True, _Level(level), tag)
            else:
                stop = value + length
                if stop > end:
                    raise TranscodeError(f"{tag_text(tag)}: an item runs past the sequence's end")
                out += encode_header(ITEM, b"", 0, True)
                start = len(out)
                self.elements(value, stop, False, _Level(level), tag)
                self.patch_length(start, tag)
                offset = stop
        if undefined:
            raise TranscodeError(f"{tag_text(tag)}: the sequence has no Sequence Delimitation")
        return offset

    def undefined(self, tag: int, vr: bytes, value: int, end: int, level: _Level) -> int:
        """Write the element ``tag`` of undefined length whose value starts at ``value``."""
        out = self.out
        if vr == _SQ:
            out += encode_header(tag, _SQ, UNDEFINED_LENGTH, self.to_implicit)
            return self.sequence(value, end, True, level, tag)
        if vr == _UN:  # an unknown sequence, whose content is Implicit VR LE (PS3.5 §6.2.2)
            stop = self.skip(value, end, True, tag)
            out += encode_header(tag, _UN, UNDEFINED_LENGTH, self.to_implicit)
            out += self.src[value:stop]
            return stop
        if vr in (_OB, _OW) and not self.to_implicit:  # encapsulated, between explicit syntaxes
            stop = self.skip(value, end, self.implicit, tag)
            out += encode_header(tag, _OB, UNDEFINED_LENGTH, False)
            if not self.big_endian:
                out += self.src[value:stop]
                return stop
            offset = value
            while offset < stop:
                item, _, length, start = self.read(offset, 0, tag)
                out += encode_header(item, b"", length, True)
                out += self.src[start : start + length]
                offset = start + length
            return stop
        raise TranscodeError(
            f"{tag_text(tag)}: an undefined length with VR {vr.decode('latin-1')} "
            f"cannot be encoded in {'Implicit' if self.to_implicit else 'Explicit'} VR"
        )

    def skip(self, value: int, end: int, implicit: bool, tag: int) -> int:
        try:
            if self.big_endian and not implicit:
                stop = _skip_big_endian(self.src, value)
            else:
                stop = skip_undefined(self.src, value, implicit)
        except (MalformedDataset, RecursionError):  # skip_undefined recurses per nesting level
            stop = end + 1
        if stop > end:
            raise TranscodeError(f"{tag_text(tag)}: its undefined-length value is truncated")
        return stop

    def implicit_vr(self, tag: int, start: int, stop: int, length: int, level: _Level) -> bytes:
        """The VR to write for an implicit element whose value is ``src[start:stop]``
        (see the module's docstring)."""
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0:
            return _UL
        if group & 1:
            if 0x10 <= element <= 0xFF:
                level.creators[group << 8 | element] = (
                    bytes(self.src[start:stop]).decode("latin-1").strip(" \x00")
                )
                vr = _LO
            else:
                creator = level.creators.get(group << 8 | element >> 8)
                vr = _UN if creator is None else _private_vr(group, element & 0xFF, creator)
        else:
            vr = _public_vr(tag)
            if tag in _CONTEXT_TAGS and stop - start >= 2:
                number = self.src[start] | self.src[start + 1] << 8
                if tag == BITS_ALLOCATED:
                    level.bits_allocated = number
                elif tag == PIXEL_REPRESENTATION:
                    level.pixel_representation = number
                else:
                    level.waveform_bits = number
        if len(vr) > 2:
            vr = _ambiguous(tag, vr, length, level)
        if length > MAX_SHORT_LENGTH and length != UNDEFINED_LENGTH and vr not in LONG_VRS:
            return _UN
        return vr

    def patch_length(self, start: int, tag: int) -> None:
        """Set the 4-byte length just before ``start`` to the bytes written since."""
        length = len(self.out) - start
        if length >= UNDEFINED_LENGTH:
            raise TranscodeError(f"{tag_text(tag)}: the re-encoded value exceeds 4 GiB")
        _LENGTH.pack_into(self.out, start - 4, length)

    def patch_group_length(self, value: int) -> None:
        _LENGTH.pack_into(self.out, value, len(self.out) - value - 4)


def _ambiguous(tag: int, vr: bytes, length: int, level: _Level) -> bytes:
    if vr == b"US or SS":
        return _SS if level.pixel_representation == 1 else _US
    if vr == b"OB or OW":
        if tag == PIXEL_DATA:
            bits = level.bits_allocated
        elif tag >> 16 == 0x5400:
            bits = level.waveform_bits
        else:
            return _OW
        return _OB if 0 <= bits <= 8 else _OW
    if vr == b"US or OW":
        return _US if length == 2 else _OW
    if vr == b"US or SS or OW":
        return _OW
    first = vr[:2]
    return first if len(vr) > 2 and vr[2:3] == b" " else _UN


def _swapped(value: memoryview, code: str, tag: int) -> bytes:
    units = array(code)
    if len(value) % units.itemsize:
        raise TranscodeError(
            f"{tag_text(tag)}: a {len(value)}-byte value is not a whole number of "
            f"{units.itemsize}-byte numbers"
        )
    units.frombytes(value)
    units.byteswap()
    return units.tobytes()


def _skip_big_endian(data: memoryview, offset: int) -> int:
    """:func:`skip_undefined` for big endian encapsulated fragments (items, then the
    Sequence Delimitation Item)."""
    while True:
        tag, _, length, offset = read_header_big_endian(data, offset)
        if tag in (SEQUENCE_DELIMITATION, ITEM_DELIMITATION):
            return offset
        if length == UNDEFINED_LENGTH or offset + length > len(data):
            raise MalformedDataset("fragment is truncated")
        offset += length


def _read_big_endian(data: memoryview, offset: int, _implicit: bool) -> Header:
    return read_header_big_endian(data, offset)


def _after(last: int, where: int) -> str:
    place = f"in an item of {tag_text(where)}" if where else "at the top level"
    return f"after {tag_text(last)} {place}" if last else f"first element {place}"
