"""Which copies must the modality send again? The read-only views of the *unsafe* copies (a sync
failed before they were durable: ``storage/instances.py``), on both backends, made unsafe the
way it happens: the durability barrier's fsync fails with EIO."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from stgcmt.dicom.commitment import Reference
from stgcmt.storage import fsync as fsync_module
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.queries import SqliteScpQueries, format_scp_status
from stgcmt.storage.scp_journal import CommitmentJournal
from stgcmt.storage.sqlite_index import SCHEMA

from support.common import SECONDARY_CAPTURE, c_store_bytes, make_dataset

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
PROCESSING_FAILURE = 0x0110


def _send(store: InstanceStore, ds) -> Reference:
    """A C-STORE of ``ds`` (again, if it was sent before), the reference to commit it."""
    store.store(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT_VR_LE, c_store_bytes(ds), "AE")
    return Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)


def _failing_fsync(path) -> None:  # the disk answers the barrier's fsync with an error
    raise OSError(errno.EIO, "write-back error", str(path))


@pytest.fixture
def archive(scp_backend, monkeypatch):
    """Two copies whose sync failed (unsafe) and one made durable after storage came back."""
    store = scp_backend.store(durability="fsync")
    lost = [make_dataset(), make_dataset()]
    refs = [_send(store, ds) for ds in lost]
    monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
    assert store.verify(refs, "checksum") == [PROCESSING_FAILURE] * 2
    monkeypatch.undo()
    kept = make_dataset()
    assert store.verify([_send(store, kept)], "checksum") == [0]
    yield store, scp_backend.queries(), lost, kept
    store.close()


def _uids(page: dict) -> set[str]:
    return {row["sop_instance_uid"] for row in page["items"]}


def test_unsafe_copies_are_counted_listed_and_filtered(archive):
    _, queries, lost, kept = archive
    status = queries.status()
    assert (status["instances"], status["instances_durable"], status["instances_unsafe"]) == (
        3,
        1,
        2,
    )
    unsafe = queries.find_instances(unsafe=True)
    assert unsafe["total"] == 2 and _uids(unsafe) == {ds.SOPInstanceUID for ds in lost}
    assert {(row["unsafe"], row["durable"]) for row in unsafe["items"]} == {(1, 0)}
    safe = queries.find_instances(unsafe=False)
    assert _uids(safe) == {kept.SOPInstanceUID}
    assert [(row["unsafe"], row["durable"]) for row in safe["items"]] == [(0, 1)]
    every = queries.find_instances()
    assert every["total"] == 3 and all("unsafe" in row for row in every["items"])
    one = queries.find_instances(unsafe=True, sop_instance_uid=lost[0].SOPInstanceUID)
    assert _uids(one) == {lost[0].SOPInstanceUID}
    assert queries.find_instances(unsafe=True, sop_instance_uid=kept.SOPInstanceUID)["total"] == 0
    assert queries.find_instances(unsafe=True, limit=0) == {"total": 2, "items": []}  # the gauge


def test_status_says_what_to_do_until_the_modality_sends_them_again(archive):
    store, queries, lost, _ = archive
    text = format_scp_status(queries.status())
    assert "instances  3 (1 durable, 2 unsafe)" in text
    assert (
        "2 copies unsafe after a failed sync: have the modality send them again"
        " (GET /api/v1/instances?unsafe=true lists them)"
    ) in text
    again = _send(store, lost[0])  # the same bytes, no --overwrite-duplicates: replaces it
    store.index.flush()  # the row, written in batches, where other connections read it
    assert _uids(queries.find_instances(unsafe=True)) == {lost[1].SOPInstanceUID}
    assert "1 copy unsafe after a failed sync" in format_scp_status(queries.status())
    assert store.verify([again], "checksum") == [0]
    _send(store, lost[1])
    store.index.flush()
    status = queries.status()
    assert (status["instances_durable"], status["instances_unsafe"]) == (2, 0)
    assert "after a failed sync" not in format_scp_status(status)


def test_an_index_an_older_version_made_has_no_unsafe_copies(tmp_path):
    """``stgcmt status`` beside an SCP not upgraded yet: its index lacks the column (added when
    the new version opens it); nothing is unsafe there, and nothing fails."""
    old = sqlite3.connect(tmp_path / "index.sqlite")
    old.executescript(SCHEMA)
    old.execute(
        "INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax, path, size,"
        " sha256, received_at) VALUES ('1.2.3', '1.2', '1.2', 'x', 1, 'ab', 1.5)"
    )
    old.execute("ALTER TABLE instances DROP COLUMN unsafe")  # as the older version made it
    old.commit()
    old.close()
    CommitmentJournal(tmp_path / "commitment.sqlite").close()
    queries = SqliteScpQueries(tmp_path)
    assert queries.status()["instances_unsafe"] == 0
    assert queries.find_instances(unsafe=True) == {"total": 0, "items": []}
    (row,) = queries.find_instances(unsafe=False)["items"]
    assert (row["sop_instance_uid"], row["unsafe"]) == ("1.2.3", 0)
