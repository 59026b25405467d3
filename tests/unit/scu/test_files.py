"""What the SCU does to a committed file (scu/files.py), checked on disk: the bytes that end up
where, what is kept, and that the source goes only after its new name is durable. Written for
the mutants tools/mutation.sh found surviving."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import stgcmt.scu.files as files
from stgcmt.scu.files import act_on, move_without_overwrite


@dataclass
class _Tx:
    on_commit: str
    move_dir: str | None = None


@dataclass
class _Row:
    path: str
    relpath: str
    size: int
    mtime_ns: int


def _row(path: Path, relpath: str = "x.dcm") -> _Row:
    st = path.stat()
    return _Row(str(path), relpath, st.st_size, st.st_mtime_ns)


def test_cross_device_move_copies_fsyncs_and_leaves_no_temporary(tmp_path, monkeypatch):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"committed bytes")
    real_link, synced = os.link, []

    def link(a, b):
        if Path(a) == src:
            raise OSError(errno.EXDEV, "cross-device link")
        real_link(a, b)

    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "link", link)
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))

    target = move_without_overwrite(src, tmp_path / "sent", "a/x.dcm")

    assert target == tmp_path / "sent" / "a" / "x.dcm"
    assert target.read_bytes() == b"committed bytes"
    assert not src.exists()
    assert synced, "the copy is fsynced before it gets its name"
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]


def test_cross_device_move_never_overwrites(tmp_path, monkeypatch):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"new")
    (tmp_path / "sent").mkdir()
    (tmp_path / "sent" / "x.dcm").write_bytes(b"already here")
    real_link = os.link

    def link(a, b):
        if Path(a) == src:
            raise OSError(errno.EXDEV, "cross-device link")
        real_link(a, b)

    monkeypatch.setattr(files.os, "link", link)
    target = move_without_overwrite(src, tmp_path / "sent", "x.dcm")

    assert target.name == "x.1.dcm" and target.read_bytes() == b"new"
    assert (tmp_path / "sent" / "x.dcm").read_bytes() == b"already here"
    assert sorted(p.name for p in (tmp_path / "sent").iterdir()) == ["x.1.dcm", "x.dcm"]


def test_a_link_error_other_than_cross_device_keeps_the_source(tmp_path, monkeypatch):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"data")

    def link(a, b):
        raise OSError(errno.EACCES, "denied")

    monkeypatch.setattr(files.os, "link", link)
    with pytest.raises(OSError):
        move_without_overwrite(src, tmp_path / "sent", "x.dcm")
    assert src.read_bytes() == b"data"
    assert list((tmp_path / "sent").iterdir()) == []


def test_the_target_directory_is_synced_before_the_source_goes(tmp_path, monkeypatch):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"data")
    seen = []
    monkeypatch.setattr(files, "fsync_path", lambda p: seen.append((Path(p), src.exists())))

    move_without_overwrite(src, tmp_path / "sent", "a/x.dcm")

    assert seen == [(tmp_path / "sent" / "a", True)]
    assert not src.exists()


def test_act_on_deletes_moves_and_keeps_changed_files(tmp_path):
    one, two = tmp_path / "one.dcm", tmp_path / "two.dcm"
    one.write_bytes(b"1")
    two.write_bytes(b"2")

    assert act_on(_Tx("delete"), _row(one)) == ("done", "deleted")
    assert not one.exists()
    gone = _Row(str(one), "one.dcm", 1, 0)
    assert act_on(_Tx("delete"), gone) == ("done", "already gone")

    state, note = act_on(_Tx("move", str(tmp_path / "sent")), _row(two, "d/two.dcm"))
    assert (state, note) == ("done", f"moved to {tmp_path / 'sent' / 'd' / 'two.dcm'}")
    assert (tmp_path / "sent" / "d" / "two.dcm").read_bytes() == b"2" and not two.exists()


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_act_on_keeps_a_file_that_changed_after_sending(tmp_path, change):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"sent")
    row = _row(path)
    if change == "size":
        row.size += 1
    else:
        row.mtime_ns += 1
    for tx in (_Tx("delete"), _Tx("move", str(tmp_path / "sent"))):
        assert act_on(tx, row) == ("skipped", "kept: the file changed after it was sent")
        assert path.read_bytes() == b"sent"
    assert not (tmp_path / "sent").exists()
