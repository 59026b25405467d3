"""The instance store: atomic writes, the durability barrier, recovery after a crash."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from stgcmt.dicom.commitment import Reference
from stgcmt.storage import row_writer
from stgcmt.storage.files import FileBlobStore, node_tag
from stgcmt.storage.instances import IncomingInstance, InstanceStore, StoreOutcome
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.storage.sqlite_index import SqliteInstanceIndex
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import CT_IMAGE, SECONDARY_CAPTURE, make_dataset


def _encoded(ds) -> bytes:
    """The dataset as a C-STORE carries it: explicit VR little endian, no File Meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path):
    s = InstanceStore(tmp_path / "data", supported_classes=STORAGE_SOP_CLASSES)
    yield s
    s.close()


def _store(store: InstanceStore, ds) -> None:
    store.store(ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1", _encoded(ds), "AE")


def test_store_indexes_and_verify_makes_durable(store):
    ds = make_dataset(patient_id="P42")
    _store(store, ds)
    assert isinstance(store.index, SqliteInstanceIndex)
    store.index.flush()  # small rows wait for the writer's next batch
    row = SqliteScpQueries(store.data_dir).instances()[0]
    assert (row["patient_id"], row["durable"]) == ("P42", 0)
    assert row["study_instance_uid"] == ds.StudyInstanceUID
    assert store.verify([Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)], "checksum") == [0]
    assert SqliteScpQueries(store.data_dir).instances()[0]["durable"] == 1
    assert list(store.root.glob("*/.*.part")) == []


def test_verify_policies(store):
    ds = make_dataset()
    _store(store, ds)
    path = store.path_for(ds.SOPInstanceUID)
    content = path.read_bytes()
    path.write_bytes(content[:-1] + b"X")  # same size, different content
    ref = [Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)]
    assert store.verify(ref, "size") == [0]
    assert store.verify(ref, "checksum") == [0x0110]
    path.unlink()
    assert store.verify(ref, "exists") == [0x0110]


def test_a_file_that_cannot_be_read_back_fails_its_reference(store, monkeypatch):
    """Found but unreadable (EIO) under the checksum policy: 0110H for that reference, not an
    exception that would leave the whole transaction verifying, retried, never reported."""
    ds = make_dataset()
    _store(store, ds)

    def unreadable(name: str) -> str:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store.blobs, "sha256", unreadable)
    ref = [Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)]
    assert store.verify(ref, "checksum") == [0x0110]


def test_recover_drops_rows_whose_files_did_not_survive(store, tmp_path):
    kept, lost = make_dataset(), make_dataset()
    _store(store, kept)
    _store(store, lost)
    store.path_for(lost.SOPInstanceUID).write_bytes(b"torn write")
    torn = f".half.dcm.{node_tag(os.uname().nodename)}.1.2.part"  # this node's, a crash's
    leftover = store.path_for(kept.SOPInstanceUID).parent / torn
    leftover.write_bytes(b"x")
    assert store.recover() == 1
    assert store.count() == 1
    assert list(store.root.glob("*/.*.part")) == []
    assert store.verify([Reference(SECONDARY_CAPTURE, lost.SOPInstanceUID)], "exists") == [0x0112]


def test_unparseable_dataset_is_refused(store):
    deflated = "1.2.840.10008.1.2.1.99"
    with pytest.raises(ValueError):
        store.store(SECONDARY_CAPTURE, "1.2.3", deflated, b"not deflate data at all", "AE")
    assert store.count() == 0


def test_conflicting_class_keeps_first_copy(store):
    ds = make_dataset()
    _store(store, ds)
    twin = make_dataset(CT_IMAGE)
    twin.SOPInstanceUID = ds.SOPInstanceUID
    outcome = store.store(CT_IMAGE, ds.SOPInstanceUID, "1.2.840.10008.1.2.1", _encoded(twin), "AE")
    assert outcome.action == "conflict"
    assert store.verify([Reference(CT_IMAGE, ds.SOPInstanceUID)], "exists") == [0x0119]


def test_store_is_composed_of_any_index_and_blob_store(tmp_path: Path):
    """The checks and the barrier sit over the interfaces: the parts can be chosen."""
    data = tmp_path / "data"
    index = SqliteInstanceIndex(tmp_path / "elsewhere" / "index.sqlite")
    blobs = FileBlobStore(data)
    s = InstanceStore(data, supported_classes=STORAGE_SOP_CLASSES, index=index, blobs=blobs)
    try:
        ds = make_dataset()
        _store(s, ds)
        assert s.verify([Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)], "checksum") == [0]
        assert index.lookup([ds.SOPInstanceUID])[ds.SOPInstanceUID].durable
        assert not (data / "index.sqlite").exists()
        assert blobs.path_for(ds.SOPInstanceUID).is_file()
    finally:
        s.close()


# -- receiving piece by piece -----------------------------------------------------------------

EXPLICIT = "1.2.840.10008.1.2.1"


def _receive(store: InstanceStore, ds, encoded: bytes, first: int = 65536):
    return store.receive(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT, encoded[:first], "AE")


def test_an_instance_received_in_pieces_is_hashed_on_the_way(store):
    ds = make_dataset(pixel_bytes=300_000)
    encoded = _encoded(ds)
    incoming = _receive(store, ds, encoded)
    assert isinstance(incoming, IncomingInstance)
    for start in range(65536, len(encoded), 16378):
        incoming.write(memoryview(encoded)[start : start + 16378])
    assert not store.path_for(ds.SOPInstanceUID).exists()  # nothing named before the end
    assert incoming.finish().action == "stored"
    content = store.path_for(ds.SOPInstanceUID).read_bytes()
    assert content.endswith(encoded)
    [row] = SqliteScpQueries(store.data_dir).instances()  # a large row: written at once
    assert row["sha256"] == hashlib.sha256(content).hexdigest()
    assert row["size"] == len(content)


def test_a_discarded_instance_leaves_no_file_and_no_row(store):
    ds = make_dataset(pixel_bytes=300_000)
    incoming = _receive(store, ds, _encoded(ds))
    assert isinstance(incoming, IncomingInstance)
    incoming.discard()
    assert [p for p in store.root.rglob("*") if p.is_file()] == []
    assert store.count() == 0
    assert store.verify([Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)], "exists") == [0x0112]


def test_the_quota_caps_an_instance_while_it_arrives(tmp_path):
    s = InstanceStore(tmp_path / "data", supported_classes=STORAGE_SOP_CLASSES, max_bytes=200_000)
    try:
        ds = make_dataset(pixel_bytes=300_000)
        encoded = _encoded(ds)
        incoming = _receive(s, ds, encoded)
        assert isinstance(incoming, IncomingInstance)
        with pytest.raises(OSError) as full:
            incoming.write(encoded[65536:])
        assert full.value.errno == errno.ENOSPC
        assert [p for p in s.root.rglob("*") if p.is_file()] == []
        ref = [Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)]
        assert s.verify(ref, "exists") == [0x0213]  # resource limitation: try again later
    finally:
        s.close()


def test_a_duplicate_is_decided_on_the_first_bytes(store):
    ds = make_dataset(pixel_bytes=300_000)
    _store(store, ds)
    assert _receive(store, ds, _encoded(ds)) == StoreOutcome(
        "duplicate", store.blobs.name_for(ds.SOPInstanceUID)
    )


def test_verification_right_after_stores_sees_rows_not_yet_written(store, monkeypatch):
    monkeypatch.setattr(row_writer, "BATCH_LINGER", 30.0)  # the writer's batch stays open
    datasets = [make_dataset() for _ in range(5)]
    for ds in datasets:
        _store(store, ds)
    assert SqliteScpQueries(store.data_dir).instances() == []  # all still pending
    refs = [Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID) for ds in datasets]
    assert store.verify(refs, "checksum") == [0] * 5
    rows = SqliteScpQueries(store.data_dir).instances()
    assert len(rows) == 5 and all(row["durable"] for row in rows)
