"""What the durability barrier decides and records in the index, seen through the public
queries: under ``checksum`` a copy made durable was read back (and stays so); under ``exists``
it was not, and a later ``checksum`` commitment reads it back; a file of another size fails
``size`` and ``checksum``; a copy replaced between the check and the sync is synced and marked
in its place. (Mutants breaking each of these passed every test.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from stgcmt.dicom.commitment import Reference
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import SECONDARY_CAPTURE, make_dataset


@pytest.fixture
def store(tmp_path: Path):
    s = InstanceStore(tmp_path / "data", supported_classes=STORAGE_SOP_CLASSES)
    yield s
    s.close()


def _stored(store: InstanceStore) -> Reference:
    ds = make_dataset()
    _store_dataset(store, ds)
    return Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)


def _store_dataset(store: InstanceStore, ds) -> None:
    """Store ``ds`` as a C-STORE carries it (Explicit VR Little Endian, no File Meta)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    store.store(
        SECONDARY_CAPTURE, ds.SOPInstanceUID, ExplicitVRLittleEndian, buffer.getvalue(), "M"
    )


def _index_row(store: InstanceStore, ref: Reference) -> tuple[int, int]:
    row = SqliteScpQueries(store.data_dir).instance(ref.sop_instance_uid)
    assert row is not None
    return row["durable"], row["read_back"]


def test_checksum_barrier_records_the_copy_as_read_back(store):
    ref = _stored(store)
    assert store.verify([ref], "checksum") == [0]
    assert _index_row(store, ref) == (1, 1)


def test_exists_barrier_does_not_and_a_later_checksum_reads_it_back(store):
    ref = _stored(store)
    assert store.verify([ref], "exists") == [0]
    assert _index_row(store, ref) == (1, 0)
    assert store.verify([ref], "checksum") == [0]
    assert _index_row(store, ref) == (1, 1)


def test_a_later_exists_barrier_keeps_the_copy_read_back(store):
    ref = _stored(store)
    assert store.verify([ref], "checksum") == [0]
    assert store.verify([ref], "exists") == [0]
    assert _index_row(store, ref) == (1, 1)


@pytest.mark.parametrize("policy, reason", [("exists", 0), ("size", 0x0110), ("checksum", 0x0110)])
def test_a_file_of_another_size_fails_size_and_checksum_only(store, policy, reason):
    ref = _stored(store)
    assert store.verify([ref], "checksum") == [0]  # read back: the size is all checksum checks
    path = store.path_for(ref.sop_instance_uid)
    path.write_bytes(path.read_bytes() + b"\0\0")  # grown behind our back
    assert store.verify([ref], policy) == [reason]


def test_a_copy_replaced_before_the_sync_is_synced_and_marked_in_its_place(tmp_path: Path):
    store = InstanceStore(
        tmp_path / "data", supported_classes=STORAGE_SOP_CLASSES, overwrite_duplicates=True
    )
    try:
        ref = _stored(store)
        barrier = store.barrier("exists")
        assert barrier.check([ref]) == [None]  # passes, waits for the sync
        ds = make_dataset(patient_id="REPLACED")
        ds.SOPInstanceUID = ref.sop_instance_uid
        _store_dataset(store, ds)  # --overwrite-duplicates: a new copy under the same UID
        assert barrier.commit() == {ref.sop_instance_uid: 0}
        row = SqliteScpQueries(store.data_dir).instance(ref.sop_instance_uid)
        assert row is not None
        assert row["patient_id"] == "REPLACED"
        assert row["durable"] == 1  # the new copy, not only the one checked, went through it
        assert (
            row["sha256"]
            == hashlib.sha256(store.path_for(ref.sop_instance_uid).read_bytes()).hexdigest()
        )
    finally:
        store.close()


@pytest.mark.parametrize("policy", ["exists", "checksum"])
def test_a_durability_round_marks_what_was_received_then_has_nothing_left(store, policy):
    refs = [_stored(store) for _ in range(3)]
    assert store.durability_round(policy) == 3
    read_back = int(policy == "checksum")
    assert [_index_row(store, ref) for ref in refs] == [(1, read_back)] * 3
    assert store.durability_round(policy) == 0


def test_a_round_under_checksum_leaves_a_damaged_copy_for_the_commitment_to_fail(store):
    ref = _stored(store)
    path = store.path_for(ref.sop_instance_uid)
    content = path.read_bytes()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))  # same size, other bytes
    assert store.durability_round("checksum") == 0
    assert _index_row(store, ref) == (0, 0)
    assert store.verify([ref], "checksum") == [0x0110]
