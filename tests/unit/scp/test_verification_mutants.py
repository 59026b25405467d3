"""Verification of a commitment larger than one journal batch, and larger than one barrier:
references that wait for the durability barrier in an early batch must not be forgotten by a
later one, and a barrier passed midway (past ``BARRIER_ROWS`` waiting references) must leave
every reference committed (mutants breaking either passed every test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from stgcmt.config import ScpConfig
from stgcmt.dicom.commitment import Reference
from stgcmt.scp.verification import Verification
from stgcmt.storage.instances import BARRIER_ROWS, InstanceStore
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.storage.scp_journal import BATCH, CommitmentJournal
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import LOCALHOST, SECONDARY_CAPTURE, make_dataset


def _encoded(ds) -> bytes:
    """The data set as a C-STORE carries it: Explicit VR Little Endian, no File Meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "count", [BATCH + 3, BARRIER_ROWS + BATCH // 2], ids=["two-batches", "two-barriers"]
)
def test_every_reference_waiting_for_the_barrier_is_committed(tmp_path: Path, count: int):
    data_dir = tmp_path / "data"
    store = InstanceStore(data_dir, supported_classes=STORAGE_SOP_CLASSES)
    journal = CommitmentJournal(data_dir / "journal.sqlite")
    try:
        refs = []
        for _ in range(count):  # none durable yet: no durability rounds run here
            ds = make_dataset(pixel_bytes=16)
            store.store(
                SECONDARY_CAPTURE, ds.SOPInstanceUID, ExplicitVRLittleEndian, _encoded(ds), "M"
            )
            refs.append(Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID))
        tx = journal.record_request("1.2.3.970", "MODALITY", LOCALHOST, "auto", refs)
        Verification(ScpConfig(data_dir=data_dir), journal, store).verify(tx)

        report = journal.report(journal.get(tx.id), "STGCMT_SCP")
        assert report.failed == []
        assert [r.sop_instance_uid for r in report.committed] == [r.sop_instance_uid for r in refs]
        rows = SqliteScpQueries(data_dir).instances()
        assert len(rows) == len(refs) and all(row["durable"] == 1 for row in rows)
    finally:
        journal.close()
        store.close()
