"""Datasets and status words of the Storage Commitment Push Model."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from stgcmt.dicom.commitment import (
    CommitmentReport,
    CommitmentRequest,
    FailedReference,
    InvalidRequest,
    Reference,
    build_action_information,
    build_event_information,
    parse_action_information,
    parse_event_information,
)
from stgcmt.dicom.status import describe_status
from stgcmt.dicom.uids import is_valid_uid


def test_status_words():
    assert describe_status(0x0112) == "0x0112 no such object instance"
    assert describe_status(0x0119) == "0x0119 class-instance conflict"
    assert describe_status(0xA701) == "0xA701 out of resources"
    assert describe_status(None) == "no status (no response)"


@pytest.mark.parametrize(
    ("uid", "valid"),
    [("1.2.840.10008.1.20.1", True), ("1.02.3", False), ("1", False), ("1.2." + "3" * 70, False)],
)
def test_uid_validation(uid, valid):
    assert is_valid_uid(uid) is valid


def test_action_information_round_trip():
    request = CommitmentRequest("1.2.3", [Reference("1.2.4", "1.2.5"), Reference("1.2.4", "1.2.6")])
    parsed = parse_action_information(build_action_information(request), max_references=10)
    assert parsed == request


def test_too_many_references_is_a_resource_limitation():
    request = CommitmentRequest("1.2.3", [Reference("1.2.4", f"1.2.{n}") for n in range(1, 4)])
    with pytest.raises(InvalidRequest) as caught:
        parse_action_information(build_action_information(request), max_references=2)
    assert caught.value.status == 0x0213


def test_event_information_round_trip():
    report = CommitmentReport(
        "1.2.3",
        committed=[Reference("1.2.4", "1.2.5")],
        failed=[FailedReference("1.2.4", "1.2.6", 0x0112)],
        retrieve_ae_title="ARCHIVE",
    )
    ds = build_event_information(report)
    assert report.event_type_id == 2
    assert parse_event_information(ds) == report


def test_event_information_without_transaction_uid_is_refused():
    with pytest.raises(InvalidRequest):
        parse_event_information(Dataset())
