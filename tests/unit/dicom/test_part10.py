"""The hand-written File Meta Information and top-level attribute reader agree with pydicom."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from stgcmt.dicom.part10 import MalformedDataset, file_meta, index_attributes

from support.common import make_dataset

EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


def _encoded(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_file_meta_reads_back_with_pydicom():
    ds = make_dataset()
    content = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT) + _encoded(ds, False)
    read = dcmread(BytesIO(content))
    assert read.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert read.file_meta.TransferSyntaxUID == EXPLICIT
    assert read.file_meta.ImplementationVersionName == "STGCMT_010"
    assert read.PatientID == ds.PatientID and read.PixelData == ds.PixelData


@pytest.mark.parametrize("implicit", [False, True])
def test_index_attributes_skip_sequences(implicit):
    ds = make_dataset(patient_id="P-7")
    item = Dataset()
    item.CodeValue = "X"
    ds.ReferencedImageSequence = [item, item]  # (0008,1140): before the attributes we read
    ds.ProcedureCodeSequence = [item]
    encoded = _encoded(ds, implicit)
    got = index_attributes(encoded, IMPLICIT if implicit else EXPLICIT)
    assert got == (ds.StudyInstanceUID, ds.SeriesInstanceUID, "P-7")


def test_undefined_length_sequences_are_skipped():
    ds = make_dataset()
    item = Dataset()
    item.CodeValue = "X"
    ds.ReferencedImageSequence = [item]
    ds["ReferencedImageSequence"].is_undefined_length = True
    encoded = _encoded(ds, False)
    assert index_attributes(encoded, EXPLICIT)[0] == ds.StudyInstanceUID


def test_missing_attributes_are_none_and_truncation_is_refused():
    ds = Dataset()
    ds.PatientName = "Only^Name"
    assert index_attributes(_encoded(ds, False), EXPLICIT) == (None, None, None)
    full = _encoded(make_dataset(), False)
    with pytest.raises(MalformedDataset):
        index_attributes(full[:30], EXPLICIT)
