"""The file blob store's durability barrier on a file system that forgets everything never
synced, as a power cut does (``tools/lazyfs.py``): after :meth:`FileBlobStore.sync` every blob
is there after the cut with its bytes, under its name, in the fan-out directory created for
it; a blob put but never synced is not (the cut does bite). Mutants that dropped the fsync of
a file, of its directory or of the store's root passed every test before."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from power_cut import LazyMount

from stgcmt.storage.files import FileBlobStore


@pytest.fixture
def lazy(tmp_path):
    mount = LazyMount(tmp_path / "backing", tmp_path / "mnt", tmp_path / "lazyfs.log")
    mount.mount()
    yield mount
    mount.unmount()


def _blobs(store: FileBlobStore, count: int, tag: str) -> dict[str, bytes]:
    """``count`` blobs, each in its own fan-out directory (named by the UID's SHA-256)."""
    blobs = {}
    for i in range(count):
        uid = f"1.2.3.{tag}.{i}"
        content = hashlib.sha256(uid.encode()).digest() * 64
        blobs[store.name_for(uid)] = content
        store.put(store.name_for(uid), content)
    return blobs


def _existing_dir(path: Path) -> Path:
    """A data dir made beforehand and synced into its parent (as an installer leaves it)."""
    path.mkdir()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


@pytest.mark.parametrize("durability", ["auto", "fsync"])
def test_synced_blobs_survive_a_power_cut_and_unsynced_ones_do_not(lazy, durability):
    store = FileBlobStore(_existing_dir(lazy.mountpoint / "data"), durability)
    synced = _blobs(store, 4, "synced")
    store.sync(list(synced))
    unsynced = _blobs(store, 2, "unsynced")
    store.close()
    lazy.unmount()  # the power cut: what was never fsynced is gone

    after = lazy.backing / "data"
    assert {name: (after / name).read_bytes() for name in synced} == synced
    assert not any((after / name).exists() for name in unsynced)


def test_a_data_dir_the_store_created_survives_a_power_cut(lazy):
    store = FileBlobStore(lazy.mountpoint / "new" / "data")
    synced = _blobs(store, 1, "first")
    store.sync(list(synced))
    store.close()
    lazy.unmount()
    after = lazy.backing / "new" / "data"
    assert {name: (after / name).read_bytes() for name in synced if (after / name).exists()} == (
        synced
    )


def test_syncfs_asked_for_where_it_cannot_be_trusted_is_refused_with_the_fix(lazy):
    data_dir = _existing_dir(lazy.mountpoint / "data")  # FUSE: syncfs proves nothing there
    with pytest.raises(OSError) as refused:
        FileBlobStore(data_dir, "syncfs")
    assert refused.value.errno == errno.ENOTSUP
    message = refused.value.strerror
    assert message.startswith(f'durability = "syncfs" cannot be trusted for {data_dir}/instances: ')
    assert message.endswith('; set durability = "auto" or "fsync"')
