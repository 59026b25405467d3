"""Synthetic instances: Secondary Capture images written as Part 10 files.

Each measurement gets fresh SOP Instance UIDs, so no server gets a cheap "duplicate" path
(Orthanc ignores a repeated instance, our SCP keeps the first copy) and every commitment
barrier has new, not yet durable files to fsync.
"""

from __future__ import annotations

import io
import math
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

SMALL_SIDE = 48  # 48 x 48 x 16 bit = 4.5 KB of pixels: ~5 KB files
LARGE_SIDE = 512  # 512 x 512 x 16 bit = 512 KB of pixels: ~0.5 MB files


@dataclass(frozen=True)
class Ref:
    """One reference of a commitment request."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class InstanceSet:
    """A folder of instances made for one measurement."""

    folder: Path
    refs: tuple[Ref, ...]
    total_bytes: int

    @property
    def count(self) -> int:
        return len(self.refs)

    @property
    def paths(self) -> list[Path]:
        return sorted(self.folder.iterdir())


def _template(side: int) -> Dataset:
    """One image, reused with new UIDs: building the dataset is the slow part of pydicom."""
    ds = Dataset()
    ds.PatientName = "BENCH^STGCMT"
    ds.PatientID = "BENCH-0001"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = side
    ds.Columns = side
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = os.urandom(side * side * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


UID_ROOT = "1.2.826.0.1.3680043.8.498."
"""pydicom's UID root; our instance UIDs are ``ROOT.<10-digit set token>.<10-digit number>``,
all of one length, so that one encoded file can be copied with only its UID bytes changed."""
_PLACEHOLDER = f"{UID_ROOT}{'1' * 10}.{'1' * 10}"


def _uid(token: int, n: int) -> str:
    return f"{UID_ROOT}{token}.{10**9 + n}"


def _encoded(ds: Dataset) -> bytes:
    """The Part 10 bytes of ``ds`` with the placeholder SOP Instance UID (meta and data set)."""
    ds.SOPInstanceUID = UID(_PLACEHOLDER)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(_PLACEHOLDER)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if data.count(_PLACEHOLDER.encode()) != 2:
        raise RuntimeError("the instance UID placeholder is not exactly in meta and data set")
    return data


def make_set(folder: Path, count: int, side: int) -> InstanceSet:
    """``count`` new instances of ``side`` x ``side`` pixels in one new series: one encoded
    template, each copy with its own SOP Instance UID (100,000 files in seconds, where pydicom
    would take minutes)."""
    folder.mkdir(parents=True, exist_ok=False)
    template = _encoded(_template(side))
    token = secrets.randbelow(9 * 10**9) + 10**9
    refs = []
    for n in range(count):
        uid = _uid(token, n)
        (folder / f"{n:06d}.dcm").write_bytes(template.replace(_PLACEHOLDER.encode(), uid.encode()))
        refs.append(Ref(SECONDARY_CAPTURE, uid))
    return InstanceSet(folder, tuple(refs), len(template) * count)


def make_big(folder: Path, megabytes: int) -> InstanceSet:
    """One instance with ``megabytes`` MiB of pixel data, written in chunks (the bench itself
    never holds it whole): the memory figure sends it in one C-STORE."""
    folder.mkdir(parents=True, exist_ok=False)
    side = 1024 * int(math.sqrt(megabytes / 2))  # side x side x 2 bytes
    ds = _template(0)
    del ds.PixelData
    ds.Rows = ds.Columns = side
    header = _encoded(ds)
    uid = _uid(secrets.randbelow(9 * 10**9) + 10**9, 0)
    path = folder / "big.dcm"
    chunk = os.urandom(1 << 23)
    left = side * side * 2
    with open(path, "wb") as out:
        out.write(header.replace(_PLACEHOLDER.encode(), uid.encode()))
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, left))
        while left:
            left -= out.write(chunk[: min(left, len(chunk))])
    return InstanceSet(folder, (Ref(SECONDARY_CAPTURE, uid),), path.stat().st_size)


def missing_refs(count: int) -> list[Ref]:
    """References to instances nobody holds (Failure Reason 0112H expected)."""
    return [Ref(SECONDARY_CAPTURE, generate_uid()) for _ in range(count)]
