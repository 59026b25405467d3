"""What the SCU does to a committed file (scu/files.py), checked on disk: the bytes that end up
where, what is kept, and that the source goes only after its new name is durable. Written for
the mutants tools/mutation.sh found surviving."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import stgcmt.scu.files as files
from stgcmt.dicom.commitment import CommitmentReport
from stgcmt.scu.files import act_on, finish_due_actions, move_without_overwrite

from support.scu import pending_transaction, refs


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


def _report_all(journal, uid: str, files) -> None:
    journal.record_report(CommitmentReport(uid, committed=refs(files)), "test")


def test_a_move_that_fails_stays_due_with_its_error_and_a_restart_finishes_it(
    scu_journal, tmp_path, caplog
):
    blocker = tmp_path / "sent"
    blocker.write_bytes(b"a file where the move directory should be")
    files = pending_transaction(
        scu_journal, tmp_path / "out", 2, on_commit="move", move_dir=blocker
    )
    _report_all(scu_journal, "1.2.3.9", files)
    tx = scu_journal.get(1)

    with caplog.at_level(logging.INFO, logger="stgcmt.scu.files"):
        finish_due_actions(scu_journal)

    rows = scu_journal.files(tx.id)
    assert [r.action for r in rows] == ["due", "due"]
    assert all(r.action_note and r.action_note.startswith("error: ") for r in rows), rows
    assert all(f.path.exists() for f in files)
    assert f"{tx.label}: 0 moved, 2 still due (errors, retried by the agent)" in caplog.messages

    blocker.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stgcmt.scu.files"):
        finish_due_actions(scu_journal)  # the next agent start
    assert f"{tx.label}: 2 moved" in caplog.messages
    rows = scu_journal.files(tx.id)
    assert [r.action for r in rows] == ["done", "done"]
    assert all(r.action_note == f"moved to {blocker / r.relpath}" for r in rows)
    assert not any(f.path.exists() for f in files)


def test_each_transaction_is_summed_up_on_its_own(scu_journal, tmp_path, caplog):
    first = pending_transaction(scu_journal, tmp_path / "a", 2, "1.2.3.1", on_commit="delete")
    second = pending_transaction(scu_journal, tmp_path / "b", 2, "1.2.3.2", on_commit="delete")
    _report_all(scu_journal, "1.2.3.1", first)
    _report_all(scu_journal, "1.2.3.2", second)
    second[0].path.write_bytes(b"rewritten after it was sent")

    with caplog.at_level(logging.INFO, logger="stgcmt.scu.files"):
        finish_due_actions(scu_journal)

    one, two = scu_journal.get(1), scu_journal.get(2)
    lines = {r.getMessage(): r.levelno for r in caplog.records}
    assert lines[f"{one.label}: 2 deleted"] == logging.INFO
    assert lines[f"{two.label}: 1 deleted, 1 kept (changed after sending)"] == logging.WARNING
    assert second[0].path.exists() and not second[1].path.exists()


def test_kept_files_are_warned_about_one_by_one_up_to_five(scu_journal, tmp_path, caplog):
    files = pending_transaction(scu_journal, tmp_path / "out", 8, on_commit="delete")
    _report_all(scu_journal, "1.2.3.9", files)
    for f in files[1:]:
        f.path.write_bytes(b"rewritten after it was sent")
    tx = scu_journal.get(1)

    with caplog.at_level(logging.DEBUG, logger="stgcmt.scu.files"):
        finish_due_actions(scu_journal)

    kept = "kept: the file changed after it was sent"
    lines = {r.getMessage(): r.levelno for r in caplog.records}
    warned = [m for m, level in lines.items() if level == logging.WARNING and kept in m]
    assert warned == [f"{tx.label}: {f.path}: {kept}" for f in files[1:6]]
    assert lines[f"{tx.label}: {files[6].path}: {kept}"] == logging.DEBUG
    assert lines[f"{tx.label}: {files[0].path}: deleted"] == logging.DEBUG
    assert lines[f"{tx.label}: 1 deleted, 7 kept (changed after sending)"] == logging.WARNING


def test_a_crash_between_two_deletions_leaves_the_rest_due_and_a_restart_finishes(
    scu_journal, tmp_path
):
    files = pending_transaction(scu_journal, tmp_path / "out", 3, on_commit="delete")
    _report_all(scu_journal, "1.2.3.9", files)
    crash_log = tmp_path / "crashes"
    agent = (
        "import sys; from pathlib import Path; from stgcmt.scu.files import finish_due_actions;"
        " from stgcmt.storage.scu_journal import ScuJournal;"
        " finish_due_actions(ScuJournal(Path(sys.argv[1])))"
    )
    env = os.environ | {"STGCMT_CRASH_POINTS": "scu.purge.mid", "STGCMT_CRASH_LOG": str(crash_log)}
    run = subprocess.run(
        [sys.executable, "-c", agent, str(scu_journal.path)], env=env, timeout=60, check=False
    )

    assert run.returncode == -signal.SIGKILL
    assert crash_log.read_text().split()[0] == "scu.purge.mid"
    assert [r.action for r in scu_journal.files(1)] == ["done", "due", "due"]
    assert [f.path.exists() for f in files] == [False, True, True]
    finish_due_actions(scu_journal)
    assert [r.action for r in scu_journal.files(1)] == ["done", "done", "done"]
    assert not any(f.path.exists() for f in files)
