"""The durability barrier as a group operation: one sync per commitment (``syncfs`` where it is
trusted, else fsyncs from a pool with each directory once), the background durability round,
the copy key that keeps a replacement from being marked durable without a sync of its own, and
the Failure Reasons of a failed barrier."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from stgcmt.dicom.commitment import Reference
from stgcmt.storage import fsync as fsync_module
from stgcmt.storage.fsync import FileSystemSync, file_system_type, syncfs_untrusted
from stgcmt.storage.instances import InstanceStore, StoreOutcome
from stgcmt.storage.interfaces import InstanceRow
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.storage.sqlite_index import LOOKUP_BATCH, SqliteInstanceIndex
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import SECONDARY_CAPTURE, c_store_bytes, make_dataset

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def stores(tmp_path: Path):
    """InstanceStore(**options) on a fresh data dir each; closed after the test."""
    opened: list[InstanceStore] = []

    def open_store(name: str = "data", **options) -> InstanceStore:
        store = InstanceStore(tmp_path / name, supported_classes=STORAGE_SOP_CLASSES, **options)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def _send(store: InstanceStore, ds) -> Reference:
    """A C-STORE of ``ds`` (again, if it was sent before), the reference to commit it."""
    store.store(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT_VR_LE, c_store_bytes(ds), "AE")
    return Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)


def _store_new(store: InstanceStore, count: int) -> list[Reference]:
    return [_send(store, make_dataset()) for _ in range(count)]


def _unsafe(store: InstanceStore, refs: list[Reference]) -> list[bool]:
    rows = store.index.lookup([ref.sop_instance_uid for ref in refs])
    return [rows[ref.sop_instance_uid].unsafe for ref in refs]


def _durable(store: InstanceStore) -> dict[str, bool]:
    return {
        r["sop_instance_uid"]: bool(r["durable"])
        for r in SqliteScpQueries(store.data_dir).instances()
    }


@pytest.fixture
def fsyncs(monkeypatch) -> list[tuple[Path, str]]:
    """Every fsync the pool makes (path, thread), passed through to the real fsync."""
    seen: list[tuple[Path, str]] = []
    real = fsync_module.fsync_path

    def recording(path):
        seen.append((Path(path), threading.current_thread().name))
        real(path)

    monkeypatch.setattr(fsync_module, "fsync_path", recording)
    return seen


@pytest.fixture
def syncfs_calls(monkeypatch) -> list[int]:
    """Each FileSystemSync.sync (a real syncfs), counted."""
    calls: list[int] = []
    real = FileSystemSync.sync

    def counting(self):
        calls.append(1)
        real(self)

    monkeypatch.setattr(FileSystemSync, "sync", counting)
    return calls


# -- which barrier ------------------------------------------------------------------------------


def test_syncfs_is_one_call_for_the_whole_commitment(stores, tmp_path, fsyncs, syncfs_calls):
    if syncfs_untrusted(tmp_path) is not None:
        pytest.skip(f"syncfs not trusted here: {syncfs_untrusted(tmp_path)}")
    store = stores(durability="syncfs")
    fsyncs.clear()  # the new data dir and instances/ into their parents
    refs = _store_new(store, 30)
    assert store.verify(refs, "checksum") == [0] * 30
    assert len(syncfs_calls) == 1
    assert fsyncs == []  # no file fsynced one after another
    assert all(_durable(store).values())


def test_auto_picks_syncfs_on_a_local_file_system(stores, tmp_path, fsyncs, syncfs_calls):
    if syncfs_untrusted(tmp_path) is not None:
        pytest.skip(f"syncfs not trusted here: {syncfs_untrusted(tmp_path)}")
    store = stores()
    fsyncs.clear()
    assert store.verify(_store_new(store, 3), "size") == [0, 0, 0]
    assert (len(syncfs_calls), fsyncs) == (1, [])


def test_fsync_pool_syncs_each_file_then_each_directory_once(stores, fsyncs, syncfs_calls):
    store = stores(durability="fsync")
    fsyncs.clear()
    refs = _store_new(store, 60)
    assert store.verify(refs, "checksum") == [0] * 60
    files = {store.path_for(ref.sop_instance_uid) for ref in refs}
    directories = {path.parent for path in files} | {store.root, store.data_dir}
    synced = [path for path, _ in fsyncs]
    assert sorted(synced[: len(files)]) == sorted(files)  # every file once, all files first
    assert sorted(synced[len(files) :]) == sorted(directories)  # then each directory once
    assert len({thread for _, thread in fsyncs}) > 1, "the fsyncs did not run in parallel"
    assert syncfs_calls == []


def test_syncfs_refused_where_it_cannot_be_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(fsync_module, "SYNCFS_FILE_SYSTEMS", frozenset())
    with pytest.raises(OSError, match='durability = "syncfs" cannot be trusted.*"fsync"'):
        InstanceStore(tmp_path / "d", supported_classes=STORAGE_SOP_CLASSES, durability="syncfs")


def test_file_system_type_names_the_mount(tmp_path):
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" - {file_system_type(tmp_path)} " in mounts


# -- a failed barrier --------------------------------------------------------------------------


@pytest.mark.parametrize("code, reason", [(errno.EIO, 0x0110), (errno.ENOSPC, 0x0213)])
def test_failed_syncfs_is_never_committed(stores, tmp_path, monkeypatch, code, reason):
    if syncfs_untrusted(tmp_path) is not None:
        pytest.skip(f"syncfs not trusted here: {syncfs_untrusted(tmp_path)}")

    def failing(fd: int) -> None:  # a write-back error reported to our descriptor
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fsync_module, "_syncfs_function", lambda: failing)
    store = stores(durability="syncfs")
    datasets = [make_dataset(), make_dataset()]
    refs = [_send(store, ds) for ds in datasets]
    assert store.verify(refs, "checksum") == [reason, reason]
    assert not any(_durable(store).values())
    assert _unsafe(store, refs) == [True, True]
    monkeypatch.undo()  # storage is back: a later sync that succeeds proves nothing about them
    assert store.verify(refs, "checksum") == [0x0110, 0x0110]
    assert not any(_durable(store).values())


def test_an_unsafe_copy_is_replaced_by_the_same_bytes_sent_again_and_then_commits(
    stores, monkeypatch
):
    store = stores(durability="fsync")  # no --overwrite-duplicates
    ds, other = make_dataset(), make_dataset()
    ref, other_ref = _send(store, ds), _send(store, other)
    monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
    assert store.verify([ref, other_ref], "checksum") == [0x0110, 0x0110]
    monkeypatch.undo()
    assert _send(store, ds) == ref  # identical bytes: a duplicate otherwise
    assert _unsafe(store, [ref, other_ref]) == [False, True]
    assert store.verify([ref, other_ref], "checksum") == [0, 0x0110]
    assert _durable(store) == {ds.SOPInstanceUID: True, other.SOPInstanceUID: False}
    assert _send(store, ds) == ref  # a durable copy: a duplicate again, kept
    assert store.verify([ref], "checksum") == [0]


def test_unsafe_copies_stay_unsafe_after_a_restart(stores, monkeypatch):
    store = stores(durability="fsync")
    refs = _store_new(store, 2)
    monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
    assert store.verify(refs, "checksum") == [0x0110, 0x0110]
    monkeypatch.undo()
    store.close()
    restarted = stores(durability="fsync")
    assert restarted.recover() == 0  # kept, so that their commitment says 0110H, not 0112H
    assert restarted.durability_round("checksum") == 0
    assert restarted.verify(refs, "checksum") == [0x0110, 0x0110]


def test_a_copy_being_received_while_a_sync_fails_is_unsafe(stores, monkeypatch):
    store = stores(durability="fsync")
    (stored,) = _store_new(store, 1)
    arriving = make_dataset(pixel_bytes=100_000)
    encoded = c_store_bytes(arriving)
    incoming = store.receive(
        arriving.SOPClassUID, arriving.SOPInstanceUID, EXPLICIT_VR_LE, encoded[:1000], "AE"
    )
    assert not isinstance(incoming, StoreOutcome)
    monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
    with pytest.raises(OSError):
        store.durability_round("checksum")  # its first pages may be among those lost
    monkeypatch.undo()
    incoming.write(encoded[1000:])
    incoming.finish()
    late = _store_new(store, 1)  # written after the failure: safe
    refs = [stored, Reference(SECONDARY_CAPTURE, arriving.SOPInstanceUID), *late]
    assert store.verify(refs, "checksum") == [0x0110, 0x0110, 0]


def test_unsafe_copies_the_index_could_not_record_are_recorded_before_the_next_sync(
    stores, monkeypatch
):
    store = stores(durability="fsync")
    refs = _store_new(store, 2)
    real_mark_unsafe = store.index.mark_unsafe
    index_failures = [OSError(errno.EIO, "index unreachable")]

    def mark_unsafe_fails_once(rows, received_by):
        if index_failures:
            raise index_failures.pop()
        return real_mark_unsafe(rows, received_by)

    monkeypatch.setattr(store.index, "mark_unsafe", mark_unsafe_fails_once)
    monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
    assert store.verify(refs, "checksum") == [0x0110, 0x0110]
    assert _unsafe(store, refs) == [False, False]  # not recorded yet
    monkeypatch.setattr(fsync_module, "fsync_path", _real_fsync_path)  # storage is back
    assert store.verify(refs, "checksum") == [0x0110, 0x0110]
    assert _unsafe(store, refs) == [True, True]


_real_fsync_path = fsync_module.fsync_path


def _failing_fsync(path) -> None:
    raise OSError(errno.EIO, "write-back error", str(path))


# -- a copy replaced while being made durable --------------------------------------------------


@pytest.mark.parametrize("same_bytes", [True, False], ids=["resent-identical", "changed"])
def test_replacement_stored_after_the_sync_gets_a_sync_of_its_own(stores, same_bytes):
    store = stores(durability="fsync", overwrite_duplicates=True)
    ds = make_dataset()
    store.store(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT_VR_LE, c_store_bytes(ds), "AE")
    replacement = ds.copy()
    if not same_bytes:
        replacement.PatientID = "OTHER"
    syncs: list[int] = []
    real_sync = store.blobs.sync

    def sync_then_replace(names):
        real_sync(names)
        syncs.append(len(names))
        if len(syncs) == 1:  # a C-STORE lands between the sync and the mark
            store.store(
                ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT_VR_LE, c_store_bytes(replacement), "AE"
            )

    store.blobs.sync = sync_then_replace  # type: ignore[method-assign]
    ref = Reference(SECONDARY_CAPTURE, ds.SOPInstanceUID)
    assert store.verify([ref], "checksum") == [0]
    assert len(syncs) == 2, "the replacement was marked durable without a sync of its own"
    row = store.index.lookup([ds.SOPInstanceUID])[ds.SOPInstanceUID]
    assert row.durable and row.read_back
    assert row.sha256 == store.blobs.sha256(row.blob)


def test_copy_key_marks_only_the_copy_that_was_synced(stores):
    store = stores(overwrite_duplicates=True)
    ds = make_dataset()
    copies = []
    for _ in range(2):  # the same bytes sent twice: two copies, two files
        store.store(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT_VR_LE, c_store_bytes(ds), "AE")
        copies.append(store.index.lookup([ds.SOPInstanceUID])[ds.SOPInstanceUID])
    first, second = copies
    assert first.received_at != second.received_at
    assert store.index.mark_durable([first], read_back=False) == set()
    assert not store.index.lookup([ds.SOPInstanceUID])[ds.SOPInstanceUID].durable
    assert store.index.mark_durable([second], read_back=False) == {ds.SOPInstanceUID}


# -- the background round ----------------------------------------------------------------------


def test_background_round_makes_instances_durable_before_the_commitment(stores, fsyncs):
    store = stores(durability="fsync")
    refs = _store_new(store, 5)
    store.start_durability_rounds("checksum")
    uids = [ref.sop_instance_uid for ref in refs]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        row.durable for row in store.index.lookup(uids).values()
    ):
        time.sleep(0.05)
    assert all(_durable(store).values())
    fsyncs.clear()
    assert store.verify(refs, "checksum") == [0] * 5
    assert fsyncs == [], "the commitment synced again what the round had made durable"


def test_round_leaves_a_copy_that_does_not_read_back(stores):
    store = stores(durability="fsync")
    (ref,) = _store_new(store, 1)
    path = store.path_for(ref.sop_instance_uid)
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(content))
    assert store.durability_round("checksum") == 0
    reads: list[str] = []
    real_sha256 = store.blobs.sha256
    store.blobs.sha256 = lambda name: reads.append(name) or real_sha256(name)  # type: ignore[method-assign]
    assert store.durability_round("checksum") == 0
    assert reads == [], "a later round read the failing copy again"
    assert store.verify([ref], "checksum") == [0x0110]  # the commitment still checks it
    assert reads == [store.blobs.name_for(ref.sop_instance_uid)]


def test_checksum_reads_back_a_copy_made_durable_under_another_policy(stores):
    store = stores(durability="fsync")
    (ref,) = _store_new(store, 1)
    assert store.verify([ref], "size") == [0]
    path = store.path_for(ref.sop_instance_uid)
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    assert store.verify([ref], "checksum") == [0x0110]


# -- the index side ----------------------------------------------------------------------------


def test_non_durable_streams_past_one_page_while_rows_are_removed(tmp_path):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    try:
        uids = [f"1.2.3.{n}" for n in range(2 * LOOKUP_BATCH + 3)]
        for n, uid in enumerate(uids):
            index.put(InstanceRow(uid, "1.2", None, None, None, "1.2", f"b{n}", 1, "ab", None, n))
        seen = []
        for row in index.non_durable():
            seen.append(row.sop_instance_uid)
            index.remove(row.sop_instance_uid)
        assert seen == uids
        assert index.count() == 0
    finally:
        index.close()


def test_an_index_from_before_read_back_and_unsafe_gets_the_columns(tmp_path):
    path = tmp_path / "index.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE instances (sop_instance_uid TEXT PRIMARY KEY, sop_class_uid TEXT NOT NULL,"
        " study_instance_uid TEXT, series_instance_uid TEXT, patient_id TEXT,"
        " transfer_syntax TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL, source_aet TEXT, received_at REAL NOT NULL,"
        " durable INTEGER NOT NULL DEFAULT 0)"
    )
    old.execute(
        "INSERT INTO instances VALUES ('1.2.3', '1.2', NULL, NULL, NULL, '1.2', 'x', 1,"
        " 'ab', NULL, 1.5, 1)"
    )
    old.commit()
    old.close()
    index = SqliteInstanceIndex(path)
    try:
        row = index.lookup(["1.2.3"])["1.2.3"]
        assert (row.durable, row.read_back, row.unsafe, row.received_at) == (
            True,
            False,
            False,
            1.5,
        )
    finally:
        index.close()


def test_a_sync_failure_met_by_the_round_fails_the_next_commitments(stores, monkeypatch):
    """The kernel reports a write-back error to one sync only: the round's. The commitments
    after it must still fail (0110H), and no round may mark those rows; a copy received after
    the failure commits."""
    store = stores(durability="fsync")
    refs = _store_new(store, 2)
    real = fsync_module.fsync_path
    failures = [OSError(errno.EIO, "write-back error")]

    def fails_once(path):
        if failures:
            raise failures.pop()
        real(path)

    monkeypatch.setattr(fsync_module, "fsync_path", fails_once)
    with pytest.raises(OSError):
        store.durability_round("checksum")
    assert store.durability_round("checksum") == 0  # nothing it may make durable
    late = _store_new(store, 1)
    assert store.verify([*refs, *late], "checksum") == [0x0110, 0x0110, 0]
    assert store.verify(refs, "checksum") == [0x0110, 0x0110]  # not forgotten
    assert _durable(store) == {
        refs[0].sop_instance_uid: False,
        refs[1].sop_instance_uid: False,
        late[0].sop_instance_uid: True,
    }


def test_a_data_dir_the_store_creates_is_synced_into_its_parents(tmp_path, fsyncs):
    data_dir = tmp_path / "new" / "deeper" / "data"
    store = InstanceStore(data_dir, supported_classes=STORAGE_SOP_CLASSES, durability="fsync")
    store.close()
    synced = [path for path, _ in fsyncs]
    # each new directory's parent, outermost first: new, deeper, data, then instances/
    expected = [tmp_path, tmp_path / "new", tmp_path / "new" / "deeper", data_dir]
    assert [path for path in synced if path in expected] == expected
