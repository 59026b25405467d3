"""Read-only views: what ``stgcmt status``, the tests and the crash campaign read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from stgcmt.dicom.commitment import CommitmentReport, Reference
from stgcmt.storage.backends import scp_status as archive_status
from stgcmt.storage.queries import (
    SqliteScpQueries,
    SqliteScuQueries,
    format_scp_status,
    format_scu_status,
    scu_status,
)

from support.common import CT_IMAGE, SECONDARY_CAPTURE, make_dataset
from support.scu import pending_transaction, refs

EXPLICIT = "1.2.840.10008.1.2.1"


def _encoded(ds) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.fixture
def archive(scp_backend):
    """A data dir (with, on PostgreSQL, its database) holding two instances (one committed and
    delivered), a class conflict and an active transaction."""
    data = scp_backend.data_dir
    store = scp_backend.store()
    journal = scp_backend.journal()
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
    yield data, kept, other, scp_backend
    store.close()


def _as_ct(ds):
    ct = make_dataset()
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ct


def test_scp_rows(archive):
    data, kept, other, backend = archive
    queries = backend.queries()
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
    data, _, _, backend = archive
    status = backend.queries().status()
    assert (status["instances"], status["instances_durable"], status["instances_unsafe"]) == (
        2,
        1,
        0,
    )
    assert status["transactions_by_state"] == {
        "received": 1,
        "verifying": 0,
        "report_pending": 0,
        "delivered": 1,
        "given_up": 0,
    }
    assert [t["transaction_uid"] for t in status["transactions"]] == ["1.2.3.2", "1.2.3.1"]
    limited = backend.queries().status(limit=1)
    assert [t["transaction_uid"] for t in limited["transactions"]] == ["1.2.3.2"]
    assert archive_status(data, database_url=backend.url) == status  # stgcmt status
    text = format_scp_status(status)
    assert "instances  2 (1 durable, 0 unsafe)" in text and "1.2.3.2" in text
    assert "unsafe after a failed sync" not in text


def test_searches_agree_on_both_backends(archive):
    _, kept, other, backend = archive
    queries = backend.queries()
    found = queries.find_transactions(state="received")
    assert found["total"] == 1 and [t["transaction_uid"] for t in found["items"]] == ["1.2.3.2"]
    by_patient = queries.find_transactions(patient_id="P1", limit=1, offset=1)
    assert by_patient["total"] == 2 and [t["transaction_uid"] for t in by_patient["items"]] == [
        "1.2.3.1"
    ]
    assert queries.find_transactions(calling_aet="NOBODY") == {"total": 0, "items": []}
    delivered = queries.transaction(found["items"][0]["id"] - 1)
    assert delivered is not None and delivered["state"] == "delivered"
    assert [
        (r["sop_instance_uid"], r["failure_reason"], r["patient_id"])
        for r in delivered["references"]
    ] == [(kept.SOPInstanceUID, 0, "P1")]
    assert queries.transaction(9999) is None
    instances = queries.find_instances(patient_id="P1")
    assert [i["sop_instance_uid"] for i in instances["items"]] == [kept.SOPInstanceUID]
    assert queries.find_instances(sop_instance_uid=other.SOPInstanceUID)["total"] == 1
    (peer,) = queries.peers()
    assert (peer["calling_aet"], peer["transactions"], peer["reports_pending"]) == (
        "MODALITY",
        2,
        0,
    )


def test_a_cluster_status_names_what_each_node_did(archive):
    """PostgreSQL only: which node received, verified, delivered and now holds what."""
    _, _, _, backend = archive
    if backend.url is None:
        pytest.skip("one SQLite archive is one node")
    status = backend.queries().status()
    assert status["nodes"] == [
        {"node": "node-a", "received": 2, "verified": 1, "delivered": 1, "leased": 1}
    ]
    text = format_scp_status(status)
    assert "node       node-a: received 2, verified 1, delivered 1, holding 1" in text
    assert "received by node-a, verified by node-a, delivered by node-a" in text
    assert f"database   {backend.url}" in text


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
