"""Data sets at the edges of the engine: pydicom for the few that are decoded (N-ACTION and
N-EVENT-REPORT information, never C-STORE), and a Part 10 header reader so a C-STORE can send
a file's data set straight from disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from stgcmt.dicom.elements import LONG_VRS, MalformedDataset, read_header

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["MalformedDataset", "NotPart10", "Part10Header", "encode_data_set", "read_part10_header"]


class NotPart10(ValueError):
    """No 'DICM' after the preamble: not a Part 10 file at all (a ``.txt``, a raw data set), as
    opposed to a Part 10 file whose header is broken."""


def encode_data_set(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` encoded in ``transfer_syntax``; pydicom is imported here, not with the module,
    which ``stgcmt send`` needs for its header reader alone."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import UID

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
_WANTED = {0x0002: "sop_class_uid", 0x0003: "sop_instance_uid", 0x0010: "transfer_syntax"}


def read_part10_header(f: BinaryIO) -> Part10Header:
    """Read the File Meta Information (Explicit VR Little Endian, group 0002) from the open
    binary stream ``f`` and leave it at the first byte of the data set. Raises ValueError
    (:class:`NotPart10` without the 'DICM' prefix, :class:`MalformedDataset` if an element
    header is truncated) if ``f`` is not a usable Part 10 file."""
    if f.read(_PREAMBLE + 4)[_PREAMBLE:] != b"DICM":
        raise NotPart10("not a DICOM Part 10 file (no DICM prefix)")
    found: dict[str, str] = {}
    while True:
        start = f.tell()
        header = f.read(8)
        if len(header) < 6 or header[:2] != b"\x02\x00":
            f.seek(start)
            break
        if header[4:6] in LONG_VRS:
            header += f.read(4)
        tag, _, length, _ = read_header(header, 0, False)
        value = f.read(length)
        if tag & 0xFFFF in _WANTED:
            found[_WANTED[tag & 0xFFFF]] = value.decode("ascii", "replace").rstrip("\0 ")
    missing = set(_WANTED.values()) - set(found)
    if missing:
        raise ValueError(f"file meta information lacks {', '.join(sorted(missing))}")
    return Part10Header(**found)
