"""Read-only views: what ``stgcmt status``, the tests and the crash campaign read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from stgcmt.dicom.commitment import CommitmentReport, Reference
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.queries import (
    SqliteScpQueries,
    SqliteScuQueries,
    format_scp_status,
    format_scu_status,
    scp_status,
    scu_status,
)
from stgcmt.storage.scp_journal import CommitmentJournal
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import CT_IMAGE, SECONDARY_CAPTURE, make_dataset
from support.scu import pending_transaction, refs

EXPLICIT = "1.2.840.10008.1.2.1"


def _encoded(ds) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.fixture
def archive(tmp_path: Path):
    """A data dir with two instances (one committed and delivered), a class conflict and an
    active transaction."""
    data = tmp_path / "data"
    store = InstanceStore(data, supported_classes=STORAGE_SOP_CLASSES)
    journal = CommitmentJournal(data / "commitment.sqlite")
    kept, other = make_dataset(patient_id="P1"), make_dataset()
    for ds in (kept, other):
        store.store(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT, _encoded(ds), "MODALITY")
    store.store(CT_IMAGE, kept.SOPInstanceUID, EXPLICIT, _encoded(_as_ct(kept)), "OTHER")
    ref = Reference(SECONDARY_CAPTURE, kept.SOPInstanceUID)
    done = journal.record_request("1.2.3.1", "MODALITY", None, "new", [ref])
    journal.record_results(done.id, [(0, *store.verify([ref], "checksum"))])
    journal.finish_verification(done.id, first_attempt_at=0.0)
    journal.mark_delivered(done.id, "new association")
    journal.record_request("1.2.3.2", "MODALITY", None, "new", [ref])
    yield data, kept, other
    journal.close()
    store.close()


def _as_ct(ds):
    ct = make_dataset()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ct


def test_scp_rows(archive):
    data, kept, other = archive
    queries = SqliteScpQueries(data)
    rows = queries.instances()
    assert [r["sop_instance_uid"] for r in rows] == [kept.SOPInstanceUID, other.SOPInstanceUID]
    assert [r["durable"] for r in rows] == [1, 0]
    row = queries.instance(kept.SOPInstanceUID)
    assert row is not None and row["patient_id"] == "P1"
    assert (data / row["path"]).is_file()
    assert queries.instance("1.2.3.999") is None
    conflicts = queries.class_conflicts()
    assert [(c["sop_instance_uid"], c["sop_class_uid"]) for c in conflicts] == [
        (kept.SOPInstanceUID, CT_IMAGE)
    ]
    assert [(t["transaction_uid"], t["state"]) for t in queries.transactions()] == [
        ("1.2.3.1", "delivered"),
        ("1.2.3.2", "received"),
    ]
    assert queries.active_transactions() == 1
    assert queries.committed_instances() == {kept.SOPInstanceUID}
    assert queries.integrity_problems() == []


def test_scp_status(archive):
    data, _, _ = archive
    status = scp_status(data)
    assert status == SqliteScpQueries(data).status()
    assert (status["instances"], status["instances_durable"]) == (2, 1)
    assert status["transactions_by_state"] == {
        "received": 1,
        "verifying": 0,
        "report_pending": 0,
        "delivered": 1,
        "given_up": 0,
    }
    assert [t["transaction_uid"] for t in status["transactions"]] == ["1.2.3.2", "1.2.3.1"]
    assert [t["transaction_uid"] for t in scp_status(data, limit=1)["transactions"]] == ["1.2.3.2"]
    text = format_scp_status(status)
    assert "instances  2 (1 durable)" in text and "1.2.3.2" in text


def test_queries_never_create_a_database(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        SqliteScpQueries(tmp_path / "nothing").transactions()
    with pytest.raises(FileNotFoundError):
        SqliteScuQueries(tmp_path / "nothing.sqlite").status()
    assert list(tmp_path.iterdir()) == []


def test_scu_rows_and_status(scu_journal, tmp_path):
    files = pending_transaction(scu_journal, tmp_path / "out", 2, on_commit="delete")
    queries = SqliteScuQueries(scu_journal.path)
    assert [(t["transaction_uid"], t["state"]) for t in queries.transactions()] == [
        ("1.2.3.9", "pending")
    ]
    assert queries.due_actions() == 0
    assert queries.integrity_problems() == []
    scu_journal.record_report(CommitmentReport("1.2.3.9", committed=refs(files)), "test")
    assert queries.due_actions() == 2
    status = scu_status(scu_journal.path)
    assert status == queries.status()
    assert status["transactions_by_state"]["committed"] == 1
    assert status["files_by_state"] == {"committed": 2}
    assert [f["action"] for f in status["transactions"][0]["files"]] == ["due", "due"]
    assert "delete/move due" in format_scu_status(status)
