"""The SCU journal and file actions: what a report may make us do, exactly once, crash-safely."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stgcmt.dicom.commitment import CommitmentReport, FailedReference, Reference
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE
from stgcmt.scu.files import finish_due_actions, move_without_overwrite
from stgcmt.storage.scu_journal import default_journal_path

from support.scu import pending_transaction, refs


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_journal_path() == tmp_path / "stgcmt" / "scu-journal.sqlite"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_journal_path() == Path.home() / ".local/state/stgcmt/scu-journal.sqlite"


def test_only_requested_references_in_the_referenced_sequence_commit(scu_journal, tmp_path):
    files = pending_transaction(scu_journal, tmp_path / "out", 3, on_commit="delete")
    stranger = Reference(files[0].sop_class_uid, "1.2.3.999")
    wrong_class = Reference("1.2.840.10008.5.1.4.1.1.2", files[1].sop_instance_uid)
    lost = refs(files)[2]
    report = CommitmentReport("1.2.3.9", committed=[*refs(files[:1]), stranger, wrong_class])
    report.failed.append(
        FailedReference(lost.sop_class_uid, lost.sop_instance_uid, NO_SUCH_OBJECT_INSTANCE)
    )

    outcome = scu_journal.record_report(report, "test")

    assert outcome.claimed and outcome.ignored == 2
    rows = scu_journal.files(outcome.tx.id)
    assert [(r.state, r.failure_reason, r.action) for r in rows] == [
        ("committed", None, "due"),
        ("failed", None, None),  # not in the report under its own SOP Class
        ("failed", NO_SUCH_OBJECT_INSTANCE, None),
    ]
    assert outcome.tx.state == "failed"


def test_a_reference_also_listed_failed_is_not_committed(scu_journal, tmp_path):
    files = pending_transaction(scu_journal, tmp_path / "out", 1, on_commit="delete")
    ref = refs(files)[0]
    report = CommitmentReport("1.2.3.9", committed=[ref])
    report.failed.append(FailedReference(ref.sop_class_uid, ref.sop_instance_uid, 0x0110))
    scu_journal.record_report(report, "test")
    assert scu_journal.files(1)[0].state == "failed"


def test_unknown_transaction_is_not_claimed(scu_journal):
    outcome = scu_journal.record_report(CommitmentReport("9.9.9"), "test")
    assert outcome.tx is None and not outcome.claimed


CLAIMER = """
import json, sys, time
from pathlib import Path
from stgcmt.dicom.commitment import CommitmentReport, Reference
from stgcmt.storage.scu_journal import ScuJournal

journal_path, go, refs = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
journal = ScuJournal(Path(journal_path))
report = CommitmentReport("1.2.3.9", committed=[Reference(c, i) for c, i in refs])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
claims = [journal.record_report(report, "x").claimed for _ in range(2)]
journal.close()
print(json.dumps(claims), flush=True)
"""


def test_two_processes_sharing_the_journal_claim_a_report_once(scu_journal, tmp_path):
    """Two real processes (send and the agent) race for the same report: exactly one claims
    it, whichever wins, and it is recorded once."""
    files = pending_transaction(scu_journal, tmp_path / "out", 2, on_commit="delete")
    go = tmp_path / "go"
    arg = json.dumps([[f.sop_class_uid, f.sop_instance_uid] for f in files])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(scu_journal.path), str(go), arg],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()  # both processes hold their own connection and start together
        outputs = [proc.communicate(timeout=30)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    claims = [c for out in outputs for c in json.loads(out.strip().splitlines()[-1])]
    assert sorted(claims) == [False, False, False, True]
    assert scu_journal.get(1).state == "committed"
    assert [row.action for row in scu_journal.files(1)] == ["due", "due"]


def test_restart_finishes_due_deletes_and_skips_changed_files(scu_journal, tmp_path):
    files = pending_transaction(scu_journal, tmp_path / "out", 3, on_commit="delete")
    scu_journal.record_report(CommitmentReport("1.2.3.9", committed=refs(files)), "test")
    # "crash" before acting: one file already deleted, one rewritten since it was sent
    files[0].path.unlink()
    files[1].path.write_bytes(b"a different file now")

    finish_due_actions(scu_journal)
    finish_due_actions(scu_journal)  # idempotent

    rows = scu_journal.files(1)
    assert [(r.action, r.action_note) for r in rows] == [
        ("done", "already gone"),
        ("skipped", "kept: the file changed after it was sent"),
        ("done", "deleted"),
    ]
    assert files[1].path.exists() and not files[2].path.exists()


def test_move_keeps_layout_and_never_overwrites(tmp_path):
    target = tmp_path / "sent"
    (target / "a").mkdir(parents=True)
    (target / "a" / "x.dcm").write_bytes(b"already here")
    for n in range(2):
        src = tmp_path / f"src{n}.dcm"
        src.write_bytes(f"new {n}".encode())
        move_without_overwrite(src, target, "a/x.dcm")
        assert not src.exists()
    assert (target / "a" / "x.dcm").read_bytes() == b"already here"
    assert (target / "a" / "x.1.dcm").read_bytes() == b"new 0"
    assert (target / "a" / "x.2.dcm").read_bytes() == b"new 1"


def test_move_interrupted_after_the_link_is_finished_without_a_copy(tmp_path):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"data")
    (tmp_path / "sent").mkdir()
    (tmp_path / "sent" / "x.dcm").hardlink_to(src)  # crash after link, before unlink

    assert move_without_overwrite(src, tmp_path / "sent", "x.dcm") == tmp_path / "sent" / "x.dcm"
    assert not src.exists()
    assert [p.name for p in (tmp_path / "sent").iterdir()] == ["x.dcm"]
