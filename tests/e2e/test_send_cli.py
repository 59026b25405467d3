"""``stgcmt send`` and ``stgcmt status --journal`` as a user runs them: subprocesses, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from stgcmt.dicom.status import describe_status

from support.common import LOCALHOST, free_port, remote, stgcmt
from support.scu import uids

SCU = "CT1"


def send_to(port: int, *args: str | Path, home: Path, archive: str = "STGCMT_SCP"):
    return stgcmt("send", f"{archive}@{LOCALHOST}:{port}", *args, "--aet", SCU, home=home)


def test_all_committed_exits_0_and_status_shows_it(scp_factory, instances, tmp_path):
    listen = free_port()
    scp = scp_factory(remotes=(remote(SCU, listen),), report_assoc="new")
    paths = instances(2)
    journal = tmp_path / "j.sqlite"
    opts = ["--listen", str(listen), "--listen-bind", LOCALHOST, "--report-assoc", "new"]

    run = send_to(
        scp.port,
        paths[0].parent,
        *opts,
        "--delete-committed",
        "--json",
        "--journal",
        journal,
        home=tmp_path,
    )

    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["files_by_state"] == {"committed": 2}
    assert not any(p.exists() for p in paths)
    status = stgcmt("status", "--journal", journal, "--json", home=tmp_path)
    transactions = json.loads(status.stdout)["transactions"]
    assert [tx["state"] for tx in transactions] == ["committed"]
    assert {f["action_note"] for f in transactions[0]["files"]} == {"deleted"}


def test_failures_exit_1_and_keep_the_files(archive_factory, instances, tmp_path):
    paths = instances(2)
    _, port = archive_factory(report="same", lose=uids(paths[:1]))
    run = send_to(port, *paths, "--delete-committed", home=tmp_path, archive="ARCHIVE")

    assert run.returncode == 1, run.stderr
    assert [p.exists() for p in paths] == [True, False]
    assert f"failed       {paths[0]}" in run.stdout
    assert describe_status(0x0112) in run.stdout
    assert "result: some files were not committed (kept) (exit 1)" in run.stdout


def test_no_report_in_time_exits_2_and_stays_pending(archive_factory, instances, tmp_path):
    _, port = archive_factory(report="never")
    journal = tmp_path / "j.sqlite"
    run = send_to(
        port,
        *instances(1),
        "--timeout",
        "0.3",
        "--journal",
        journal,
        "--delete-committed",
        home=tmp_path,
        archive="ARCHIVE",
    )

    assert run.returncode == 2, run.stderr
    assert "still pending in the journal" in run.stderr
    status = stgcmt("status", "--journal", journal, home=tmp_path)
    assert "pending: 1" in status.stdout
    assert "(delete" not in status.stdout  # nothing is due before a report


def test_archive_down_exits_3_and_deletes_nothing(instances, tmp_path):
    paths = instances(2)
    run = send_to(free_port(), *paths, "--delete-committed", home=tmp_path)
    assert run.returncode == 3
    assert "cannot connect" in run.stderr and "no local file was deleted" in run.stderr
    assert all(p.exists() for p in paths)


def test_usage_errors_exit_3(instances, tmp_path):
    path = instances(1)[0]
    new_without_listener = send_to(1, path, "--report-assoc", "new", home=tmp_path)
    assert new_without_listener.returncode == 3
    assert "give --listen PORT" in new_without_listener.stderr
    nothing_to_send = send_to(1, tmp_path / "empty", home=tmp_path)
    assert nothing_to_send.returncode == 3 and "no DICOM files found" in nothing_to_send.stderr
    bad_peer = stgcmt("send", "nowhere", path, home=tmp_path)
    assert bad_peer.returncode == 3
