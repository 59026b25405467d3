"""Synthetic instances: Secondary Capture images written as Part 10 files.

Each measurement gets fresh SOP Instance UIDs, so no server gets a cheap "duplicate" path
(Orthanc ignores a repeated instance, our SCP keeps the first copy) and every commitment
barrier has new, not yet durable files to fsync.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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


def make_set(folder: Path, count: int, side: int) -> InstanceSet:
    """``count`` new instances of ``side`` x ``side`` pixels in one new series."""
    folder.mkdir(parents=True, exist_ok=False)
    ds = _template(side)
    refs = []
    total = 0
    for n in range(count):
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = n + 1
        path = folder / f"{n:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
        refs.append(Ref(SECONDARY_CAPTURE, uid))
    return InstanceSet(folder, tuple(refs), total)


def missing_refs(count: int) -> list[Ref]:
    """References to instances nobody holds (Failure Reason 0112H expected)."""
    return [Ref(SECONDARY_CAPTURE, generate_uid()) for _ in range(count)]
