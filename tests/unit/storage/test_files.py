"""The file blob store: atomic puts, the containment rule, recovery of leftovers."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from stgcmt.storage.files import TEMP_MAX_AGE, FileBlobStore, node_tag, sha256_of
from stgcmt.storage.fsync import fsync_files_and_directories, fsync_path

UID = "1.2.3.4.5"


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "data")


def test_names_derive_from_the_uid_hash_never_the_uid(blobs: FileBlobStore):
    digest = hashlib.sha256(UID.encode()).hexdigest()
    assert blobs.name_for(UID) == f"instances/{digest[:2]}/{digest}.dcm"
    assert blobs.name_for("../../etc/passwd").startswith("instances/")
    assert blobs.path_for(UID) == blobs.data_dir / blobs.name_for(UID)


def test_put_is_atomic_and_replaces(blobs: FileBlobStore):
    name = blobs.name_for(UID)
    blobs.put(name, b"first")
    blobs.put(name, b"second")
    assert blobs.path(name).read_bytes() == b"second"
    assert blobs.size(name) == 6
    assert blobs.sha256(name) == hashlib.sha256(b"second").hexdigest()
    with blobs.open(name) as f:
        assert f.read() == b"second"
    assert list(blobs.root.glob("*/.*.part")) == []


def test_failed_put_leaves_no_part_file_and_no_blob(blobs: FileBlobStore):
    name = blobs.name_for(UID)
    blobs.path(name).mkdir(parents=True)  # a directory where the file should go
    with pytest.raises(OSError):
        blobs.put(name, b"content")
    assert blobs.path(name).is_dir()
    assert list(blobs.path(name).parent.glob(".*.part")) == []


@pytest.mark.parametrize(
    "name",
    [
        "../outside.dcm",
        "/etc/passwd",
        "instances/ab/../../../outside.dcm",
        "elsewhere/ab/x.dcm",
        "",
    ],
)
def test_names_outside_the_store_are_refused(blobs: FileBlobStore, name: str):
    assert not blobs.contains(name)


def test_a_symlinked_directory_leading_out_is_refused(blobs: FileBlobStore, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.dcm").write_bytes(b"not ours")
    os.symlink(outside, blobs.root / "zz")
    assert not blobs.contains("instances/zz/x.dcm")
    assert blobs.contains(blobs.name_for(UID))


def test_remove_is_idempotent(blobs: FileBlobStore):
    name = blobs.name_for(UID)
    blobs.put(name, b"x")
    blobs.remove(name)
    blobs.remove(name)
    assert not blobs.path(name).exists()


def _interrupted_write(blobs: FileBlobStore, uid: str) -> Path:
    """A temp-name write cut short (as a crash leaves it, or as it is while another node is
    still receiving): its ``.part`` file."""
    blobs._unnamed = False  # NFS: no O_TMPFILE
    writer = blobs.create(blobs.name_for(uid))
    writer.write([b"torn"])
    (leftover,) = blobs.path(blobs.name_for(uid)).parent.glob(".*.part")
    return leftover


def test_recover_clears_its_own_leftovers_and_keeps_blobs(blobs: FileBlobStore):
    name = blobs.name_for(UID)
    blobs.put(name, b"kept")
    leftover = _interrupted_write(blobs, "1.2.3.4.6")
    assert blobs.recover() == 1
    assert not leftover.exists()
    assert blobs.path(name).read_bytes() == b"kept"
    assert blobs.recover() == 0


def test_a_node_restarting_on_a_shared_dir_keeps_the_temp_file_another_node_writes(
    tmp_path: Path,
):
    writing = FileBlobStore(tmp_path / "shared", node="node-a")
    restarting = FileBlobStore(tmp_path / "shared", node="node-b")
    theirs = _interrupted_write(writing, UID)
    own = _interrupted_write(restarting, "1.2.3.4.6")
    assert "node-a" in theirs.name and "node-b" in own.name
    assert restarting.recover() == 1
    assert theirs.exists() and not own.exists()
    old = time.time() - TEMP_MAX_AGE - 60  # a crash's leftover of the other node, long ago
    os.utime(theirs, (old, old))
    assert restarting.recover() == 1
    assert not theirs.exists()


def test_temp_files_of_names_told_apart_only_by_replaced_characters_stay_apart():
    assert node_tag("host:104") != node_tag("host-104")
    assert node_tag("host:104").startswith("host-104-")
    assert "." not in node_tag("a.b/../c") and "/" not in node_tag("a.b/../c")


def test_an_old_style_leftover_without_a_node_waits_for_the_safe_age(blobs: FileBlobStore):
    leftover = blobs.path(blobs.name_for(UID)).parent / ".half.dcm.1.2.part"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"torn")
    assert blobs.recover() == 0
    old = time.time() - TEMP_MAX_AGE - 60
    os.utime(leftover, (old, old))
    assert blobs.recover() == 1


def test_sync_and_fsync_helpers_work_on_files_and_directories(blobs: FileBlobStore):
    names = [blobs.name_for(f"1.2.3.{i}") for i in range(3)]
    for name in names:
        blobs.put(name, b"data")
    blobs.sync(names)
    fsync_path(blobs.root)
    fsync_files_and_directories([blobs.path(names[0])], [blobs.root])
    with pytest.raises(FileNotFoundError):
        fsync_path(blobs.root / "missing")


def test_sha256_of_streams(tmp_path: Path):
    path = tmp_path / "big"
    content = os.urandom(3 << 20)
    path.write_bytes(content)
    assert sha256_of(path) == hashlib.sha256(content).hexdigest()


# -- writing piece by piece ---------------------------------------------------------------------


@pytest.fixture(params=["unnamed", "temp-name"])
def writing_blobs(request, tmp_path: Path) -> FileBlobStore:
    """Both ways a blob is written: O_TMPFILE + linkat, and a temp name + rename (the file
    systems without O_TMPFILE)."""
    blobs = FileBlobStore(tmp_path / "data")
    if request.param == "temp-name":
        blobs._unnamed = False
    else:
        assert blobs._unnamed, "this file system takes O_TMPFILE: the default path"
    return blobs


def _files(blobs: FileBlobStore) -> list[Path]:
    return sorted(p for p in blobs.root.rglob("*") if p.is_file())


def test_a_blob_written_in_pieces_appears_whole_at_commit(writing_blobs: FileBlobStore):
    name = writing_blobs.name_for(UID)
    writer = writing_blobs.create(name)
    writer.write([b"preamble", memoryview(b"and the rest")[4:]])
    writer.write([b"", b"!" * 100_000])
    assert _files(writing_blobs) == [] or writing_blobs.path(name) not in _files(writing_blobs)
    writer.commit()
    assert writing_blobs.path(name).read_bytes() == b"preamblethe rest" + b"!" * 100_000
    assert _files(writing_blobs) == [writing_blobs.path(name)]


def test_a_committed_blob_replaces_the_old_one(writing_blobs: FileBlobStore):
    name = writing_blobs.name_for(UID)
    writing_blobs.put(name, b"first")
    writing_blobs.put(name, b"second")  # linkat refuses an existing name: temp + rename
    assert writing_blobs.path(name).read_bytes() == b"second"
    assert _files(writing_blobs) == [writing_blobs.path(name)]


def test_a_discarded_blob_leaves_nothing(writing_blobs: FileBlobStore):
    name = writing_blobs.name_for(UID)
    writer = writing_blobs.create(name)
    writer.write([b"x" * 100_000])
    writer.discard()
    writer.discard()  # idempotent
    assert _files(writing_blobs) == []
