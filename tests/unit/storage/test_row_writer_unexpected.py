"""A batch of index rows whose write fails with something other than ``OSError`` (a bug, a
``MemoryError``) must be written by the writer's next attempt, as its log line says: if it is
dropped instead, the instances were answered Success but stay pending forever, and every
commitment of them fails with 0110H (and a restart forgets them)."""

from __future__ import annotations

from pathlib import Path

from stgcmt.dicom.commitment import Reference
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.sqlite_index import SqliteInstanceIndex
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import SECONDARY_CAPTURE, c_store_bytes, make_dataset, wait_for


def test_a_batch_that_failed_unexpectedly_is_written_later_and_committed(
    tmp_path: Path, monkeypatch
):
    insert = SqliteInstanceIndex._insert
    failures = [MemoryError("the first batch")]

    def insert_failing_once(index: SqliteInstanceIndex, rows) -> None:
        if failures:
            raise failures.pop()
        insert(index, rows)

    monkeypatch.setattr(SqliteInstanceIndex, "_insert", insert_failing_once)
    store = InstanceStore(tmp_path / "data", supported_classes=STORAGE_SOP_CLASSES)
    try:
        datasets = [make_dataset() for _ in range(3)]
        for ds in datasets:
            store.store(
                ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1", c_store_bytes(ds), "AE"
            )
        assert wait_for(lambda: not failures, 5)  # the writer met the failure
        refs = [Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID) for ds in datasets]
        assert store.verify(refs, "checksum") == [0, 0, 0]
        assert store.count() == 3
    finally:
        store.close()
