"""What the durability barrier records in the index, seen through the public queries: under
the ``checksum`` policy a copy made durable was read back (and is not read again by later
commitments); under ``exists`` it was not, and a later ``checksum`` commitment reads it back.
(A mutant that dropped the policy from the barrier passed every test.)"""

from __future__ import annotations

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
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    store.store(
        SECONDARY_CAPTURE, ds.SOPInstanceUID, ExplicitVRLittleEndian, buffer.getvalue(), "M"
    )
    return Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)


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
