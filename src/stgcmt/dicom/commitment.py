"""Storage Commitment Push Model (PS3.4 Annex J): the N-ACTION Action Information and the
N-EVENT-REPORT Event Information, as plain values and as pydicom datasets.

Pure data: the references, the request and report, and the checks an N-ACTION must pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

from stgcmt.dicom.status import (
    INVALID_ARGUMENT_VALUE,
    MISTYPED_ARGUMENT,
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
)
from stgcmt.dicom.uids import is_valid_uid

ACTION_TYPE_REQUEST_COMMITMENT = 1
EVENT_TYPE_ALL_COMMITTED = 1
EVENT_TYPE_FAILURES_EXIST = 2


class Reference(NamedTuple):
    """One item of a Referenced SOP Sequence. (Named tuples: a request can hold 100,000.)"""

    sop_class_uid: str
    sop_instance_uid: str


class FailedReference(NamedTuple):
    """One item of a Failed SOP Sequence."""

    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int


@dataclass
class CommitmentRequest:
    """The content of an N-ACTION Action Type 1 request."""

    transaction_uid: str
    references: list[Reference]


@dataclass
class CommitmentReport:
    """The content of an N-EVENT-REPORT (Event Type 1 or 2)."""

    transaction_uid: str
    committed: list[Reference] = field(default_factory=list)
    failed: list[FailedReference] = field(default_factory=list)
    retrieve_ae_title: str | None = None

    @property
    def event_type_id(self) -> int:
        return EVENT_TYPE_FAILURES_EXIST if self.failed else EVENT_TYPE_ALL_COMMITTED


class InvalidRequest(ValueError):
    """An N-ACTION whose Action Information cannot be honoured; carries the DIMSE status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _new_dataset() -> Dataset:
    """An empty pydicom data set, pydicom imported on first use: ``stgcmt status`` and
    ``stgcmt send --help`` import this module (through the journal) and build none."""
    from pydicom.dataset import Dataset

    return Dataset()


def build_action_information(request: CommitmentRequest) -> Dataset:
    """Action Information of an N-ACTION request (PS3.4 J.3.2.1.1)."""
    ds = _new_dataset()
    ds.TransactionUID = request.transaction_uid
    ds.ReferencedSOPSequence = _reference_items(request.references)
    return ds


def _reference_items(refs: Iterable[Reference | FailedReference]) -> list[Dataset]:
    items = []
    for ref in refs:
        item = _new_dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        if isinstance(ref, FailedReference):
            item.FailureReason = ref.failure_reason
        items.append(item)
    return items


def build_event_information(report: CommitmentReport) -> Dataset:
    """Event Information of an N-EVENT-REPORT (PS3.4 J.3.3.1.1, Tables J.3-2/J.3-3)."""
    ds = _new_dataset()
    ds.TransactionUID = report.transaction_uid
    if report.retrieve_ae_title:
        ds.RetrieveAETitle = report.retrieve_ae_title
    if report.committed:
        ds.ReferencedSOPSequence = _reference_items(report.committed)
    if report.failed:
        ds.FailedSOPSequence = _reference_items(report.failed)
    return ds


def parse_action_information(ds: Dataset | None, max_references: int) -> CommitmentRequest:
    """Validate an N-ACTION's Action Information, raising :class:`InvalidRequest` with the
    status the requester should get. Accessing elements may raise on malformed encodings, which
    is reported as a mistyped argument rather than crashing the association."""
    if ds is None:
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "no Action Information in the N-ACTION")
    try:
        return _parse_action_information(ds, max_references)
    except InvalidRequest:
        raise
    except Exception as exc:  # pydicom raises many types on malformed values
        raise InvalidRequest(MISTYPED_ARGUMENT, f"cannot decode Action Information: {exc}") from exc


def _parse_action_information(ds: Dataset, max_references: int) -> CommitmentRequest:
    uid = ds.get("TransactionUID")
    items = ds.get("ReferencedSOPSequence")
    refs = None
    if items is not None:
        refs = [
            (
                _optional_text(i.get("ReferencedSOPClassUID")),
                _optional_text(i.get("ReferencedSOPInstanceUID")),
            )
            for i in items
        ]
    return validate_request(_optional_text(uid), refs, max_references)


def _optional_text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


RawReference = tuple[str | None, str | None]


def validate_request(
    transaction_uid: str | None, references: Sequence[RawReference] | None, max_references: int
) -> CommitmentRequest:
    """The checks an N-ACTION's Action Information must pass, on plain values: the pydicom
    reader and the fast reader (``stgcmt.dicom.codec``) both end here, so both answer alike."""
    if not transaction_uid:
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "Transaction UID (0008,1195) is missing")
    if not is_valid_uid(transaction_uid):
        raise InvalidRequest(
            INVALID_ARGUMENT_VALUE, f"Transaction UID (0008,1195) {transaction_uid!r} is not a UID"
        )
    if references is None:
        raise InvalidRequest(
            INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence (0008,1199) is missing"
        )
    if len(references) == 0:
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence (0008,1199) is empty")
    if len(references) > max_references:
        raise InvalidRequest(
            RESOURCE_LIMITATION,
            f"{len(references)} references exceed the limit of {max_references} per request",
        )
    return CommitmentRequest(
        transaction_uid, [_checked_reference(ref, n) for n, ref in enumerate(references)]
    )


def _checked_reference(ref: RawReference, index: int) -> Reference:
    sop_class, sop_instance = ref
    for keyword, value in (
        ("Referenced SOP Class UID (0008,1150)", sop_class),
        ("Referenced SOP Instance UID (0008,1155)", sop_instance),
    ):
        if not value:
            raise InvalidRequest(INVALID_ARGUMENT_VALUE, f"item {index + 1} lacks {keyword}")
        if not is_valid_uid(value):
            raise InvalidRequest(
                INVALID_ARGUMENT_VALUE, f"item {index + 1}: {keyword} {value!r} is not a UID"
            )
    return Reference(sop_class, sop_instance)  # type: ignore[arg-type]


def parse_event_information(ds: Dataset | None) -> CommitmentReport:
    """Read an N-EVENT-REPORT's Event Information; raises :class:`InvalidRequest` if it has no
    usable Transaction UID (the report cannot then be matched to anything)."""
    if ds is None or not ds.get("TransactionUID"):
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "Transaction UID (0008,1195) is missing")
    try:
        committed = [
            Reference(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in ds.get("ReferencedSOPSequence", [])
        ]
        failed = [
            FailedReference(
                str(i.ReferencedSOPClassUID),
                str(i.ReferencedSOPInstanceUID),
                int(i.get("FailureReason", PROCESSING_FAILURE)),
            )
            for i in ds.get("FailedSOPSequence", [])
        ]
    except Exception as exc:
        raise InvalidRequest(MISTYPED_ARGUMENT, f"cannot decode Event Information: {exc}") from exc
    retrieve = ds.get("RetrieveAETitle")
    return CommitmentReport(
        str(ds.TransactionUID), committed, failed, str(retrieve) if retrieve else None
    )
