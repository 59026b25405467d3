"""The hand-written commitment codec agrees with pydicom, both ways, and validates alike."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from stgcmt.dicom import codec
from stgcmt.dicom.commitment import (
    CommitmentReport,
    CommitmentRequest,
    FailedReference,
    InvalidRequest,
    Reference,
    build_action_information,
    build_event_information,
    parse_event_information,
)

SC = "1.2.840.10008.5.1.4.1.1.7"
REQUEST = CommitmentRequest("1.2.3.4", [Reference(SC, f"1.2.3.{n}") for n in range(1, 6)])
REPORT = CommitmentReport(
    "1.2.3.4",
    committed=[Reference(SC, "1.2.3.1"), Reference(SC, "1.2.3.22")],
    failed=[FailedReference(SC, "1.2.3.5", 0x0112), FailedReference("1.2.3", "1.2.3.6", 0x0122)],
    retrieve_ae_title="ARCHIVE",
)


def _pydicom_bytes(ds: Dataset, implicit: bool, undefined: bool = False) -> bytes:
    if undefined:
        for element in ds:
            if element.VR == "SQ":
                element.is_undefined_length = True
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize("implicit", [True, False])
def test_request_round_trip_and_pydicom_reads_ours(implicit):
    data = codec.encode_request(REQUEST, implicit)
    assert codec.decode_request(data, implicit, True, 10) == REQUEST
    ds = read_dataset(DicomBytesIO(data), implicit, True)
    assert ds.TransactionUID == REQUEST.transaction_uid
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedSOPSequence] == [
        r.sop_instance_uid for r in REQUEST.references
    ]


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("undefined", [True, False])
def test_report_from_pydicom_decodes_the_same(implicit, undefined):
    data = _pydicom_bytes(build_event_information(REPORT), implicit, undefined)
    assert codec.decode_report(data, implicit, True) == REPORT
    ours = codec.encode_report(REPORT, implicit)
    assert parse_event_information(read_dataset(DicomBytesIO(ours), implicit, True)) == REPORT


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda ds: delattr(ds, "TransactionUID"), 0x0115),
        (lambda ds: setattr(ds, "TransactionUID", "1.02"), 0x0115),
        (lambda ds: setattr(ds, "ReferencedSOPSequence", []), 0x0115),
        (lambda ds: delattr(ds.ReferencedSOPSequence[2], "ReferencedSOPClassUID"), 0x0115),
    ],
)
def test_invalid_requests_get_the_same_status_as_the_pydicom_path(mutate, status):
    ds = build_action_information(REQUEST)
    mutate(ds)
    with pytest.raises(InvalidRequest) as caught:
        codec.decode_request(_pydicom_bytes(ds, False), False, True, 10)
    assert caught.value.status == status


def test_too_many_references_and_broken_bytes():
    with pytest.raises(InvalidRequest) as caught:
        codec.decode_request(codec.encode_request(REQUEST, True), True, True, 4)
    assert caught.value.status == 0x0213
    with pytest.raises(InvalidRequest) as caught:
        codec.decode_request(codec.encode_request(REQUEST, True)[:-7], True, True, 10)
    assert caught.value.status in (0x0212, 0x0115)
