"""Data sets at the edges of the engine: pydicom for the few that are decoded (N-ACTION and
N-EVENT-REPORT information, never C-STORE), and a Part 10 header reader so a C-STORE can send
a file's data set straight from disk."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID


def encode_data_set(ds: Dataset, transfer_syntax: str) -> bytes:
    uid = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_implicit_VR = uid.is_implicit_VR
    fp.is_little_endian = uid.is_little_endian
    write_dataset(fp, ds)
    return fp.getvalue()


@dataclass(frozen=True)
class Part10Header:
    """What a C-STORE needs from a file's meta information (PS3.10 §7.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


_PREAMBLE = 128
_ELEMENT = struct.Struct("<HH2s")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_WANTED = {0x0002: "sop_class_uid", 0x0003: "sop_instance_uid", 0x0010: "transfer_syntax"}


def read_part10_header(f: BinaryIO) -> Part10Header:
    """Read the File Meta Information (Explicit VR Little Endian, group 0002) and leave ``f``
    at the first byte of the data set. Raises ValueError if ``f`` is not a Part 10 file."""
    if f.read(_PREAMBLE + 4)[_PREAMBLE:] != b"DICM":
        raise ValueError("not a DICOM Part 10 file (no DICM prefix)")
    found: dict[str, str] = {}
    while True:
        start = f.tell()
        header = f.read(_ELEMENT.size)
        if len(header) < _ELEMENT.size or _ELEMENT.unpack(header)[0] != 0x0002:
            f.seek(start)
            break
        _, element, vr = _ELEMENT.unpack(header)
        if vr in _LONG_VRS:
            f.read(2)
            (length,) = struct.unpack("<L", f.read(4))
        else:
            (length,) = struct.unpack("<H", f.read(2))
        value = f.read(length)
        if element in _WANTED:
            found[_WANTED[element]] = value.decode("ascii", "replace").rstrip("\0 ")
    missing = set(_WANTED.values()) - set(found)
    if missing:
        raise ValueError(f"file meta information lacks {', '.join(sorted(missing))}")
    return Part10Header(**found)
