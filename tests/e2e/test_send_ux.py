"""What a new user of ``stgcmt send`` / ``agent`` / ``status`` sees: JSON on every exit, counts
that include what the agent did, quiet per-file logs, words for "no report", a progress bar with
stages, and hints (``--max-refs``, ``--listen``). Real processes and sockets throughout."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from pynetdicom import AE, evt

from stgcmt.scu import reports
from stgcmt.scu.agent import Agent

from support.common import LOCALHOST, free_port, remote
from support.pynetdicom_archive import STORAGE_CLASSES, Archive
from support.scu import uids

SCU = "CT1"


def stgcmt(*args: str | Path, home: Path, cwd: Path | None = None, **kw):
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state")}
    return subprocess.run(
        [sys.executable, "-m", "stgcmt", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=cwd,
        **kw,
    )


def send_to(port: int, *args: str | Path, home: Path, archive: str = "ARCHIVE"):
    return stgcmt("send", f"{archive}@{LOCALHOST}:{port}", *args, "--aet", SCU, home=home)


class StoreFailingArchive(Archive):
    """Answers C-STORE 0xA700 for the SOP Instance UIDs in ``refuse``."""

    refuse: set[str] = set()

    def _on_store(self, event) -> int:
        if str(event.request.AffectedSOPInstanceUID) in self.refuse:
            return 0xA700
        return super()._on_store(event)


class LimitedArchive(Archive):
    """Refuses every N-ACTION with 0x0213 resource limitation."""

    def _on_action(self, event) -> tuple[int, None]:
        return 0x0213, None


class NoCommitmentArchive(Archive):
    """Storage only: the Storage Commitment context is rejected."""

    def start(self) -> int:
        ae = AE(self.aet)
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server((LOCALHOST, 0), block=False, evt_handlers=handlers)
        return self._server.server_address[1]


def send_to_archive(archive: Archive, *paths: Path, home: Path):
    """``stgcmt send`` to ``archive`` (one of the misbehaving archives above), started for
    this one run and stopped after it, also when the run fails."""
    port = archive.start()
    try:
        return send_to(port, *paths, home=home)
    finally:
        archive.stop()


# -- 1. --json always prints the result ----------------------------------------------------------


def test_json_is_printed_on_exit_3_with_the_error_and_aborted_files(instances, tmp_path):
    paths = instances(2)
    journal = tmp_path / "j.sqlite"
    down = send_to(free_port(), *paths, "--json", "--journal", journal, home=tmp_path)

    assert down.returncode == 3
    result = json.loads(down.stdout)
    assert result["exit_status"] == 3
    assert "cannot connect" in result["error"]
    assert result["files_by_state"] == {"aborted": 2}
    assert [tx["state"] for tx in result["transactions"]] == ["aborted"]
    assert all("aborted" in f["reason"] for f in result["transactions"][0]["files"])

    empty = send_to(1, tmp_path / "empty", "--json", home=tmp_path)
    assert empty.returncode == 3
    assert json.loads(empty.stdout)["exit_status"] == 3
    assert "no DICOM files found" in json.loads(empty.stdout)["error"]

    usage = send_to(1, paths[0], "--report-assoc", "new", "--json", home=tmp_path)
    assert usage.returncode == 3 and "give --listen PORT" in json.loads(usage.stdout)["error"]


# -- 2. send and agent on one journal ------------------------------------------------------------


def test_send_counts_the_deletions_the_agent_did(scp_factory, instances, tmp_path, monkeypatch):
    agent_port = free_port()
    scp = scp_factory(remotes=(remote(SCU, agent_port),), report_assoc="new")
    paths = instances(20)
    journal = tmp_path / "j.sqlite"
    slow = reports.perform_actions

    def perform_slowly(journal, rows):  # the agent is still deleting when send looks
        time.sleep(1.5)
        return slow(journal, rows)

    monkeypatch.setattr(reports, "perform_actions", perform_slowly)
    with Agent(journal, SCU, LOCALHOST, agent_port):
        run = send_to(
            scp.port,
            paths[0].parent,
            "--delete-committed",
            "--timeout",
            "30",
            "--journal",
            journal,
            home=tmp_path,
            archive="STGCMT_SCP",
        )

    assert run.returncode == 0, run.stdout + run.stderr
    assert not any(p.exists() for p in paths)
    assert "files: 20 committed; 20 deleted/moved;" in run.stdout
    assert "result: all committed (exit 0)" in run.stdout


# -- 3. quiet per-file logs, summarised failures, aborted files ----------------------------------


def test_deletions_log_one_info_line_per_transaction(scp_factory, instances, tmp_path):
    listen = free_port()
    scp = scp_factory(remotes=(remote(SCU, listen),), report_assoc="new")
    paths = instances(12)
    opts = ["--listen", str(listen), "--listen-bind", LOCALHOST, "--report-assoc", "new"]
    run = send_to(
        scp.port, paths[0].parent, *opts, "--delete-committed", home=tmp_path, archive="STGCMT_SCP"
    )

    assert run.returncode == 0, run.stderr
    assert not any(str(p) in run.stderr for p in paths)  # no per-file lines without -v
    assert ": 12 deleted" in run.stderr


def test_failures_and_timeouts_are_summarised(archive_factory, instances, tmp_path):
    paths = instances(9)
    _, port = archive_factory(report="same", lose=uids(paths[:8]))
    failed = send_to(port, *paths, home=tmp_path)
    assert failed.returncode == 1
    assert "9 files: 1 committed, 8 failed" in failed.stdout
    assert failed.stdout.count("Failure Reason 0x0112") == 5
    assert "... and 3 more (-v lists every file)" in failed.stdout
    verbose = send_to(port, *paths, "-v", home=tmp_path)
    assert verbose.stdout.count("Failure Reason 0x0112") == 8
    assert "committed    " in verbose.stdout

    _, never = archive_factory(report="never")
    timed_out = send_to(never, *paths, "--timeout", "0.3", home=tmp_path)
    assert timed_out.returncode == 2
    assert "9 files: 9 pending" in timed_out.stdout
    file_lines = [line.split() for line in timed_out.stdout.splitlines() if line.startswith("  ")]
    assert file_lines and all(words[-1] != "pending" for words in file_lines)  # not "pending"
    assert "no report yet" in timed_out.stdout


def test_status_shows_aborted_files_as_aborted(instances, tmp_path):
    journal = tmp_path / "j.sqlite"
    send_to(free_port(), *instances(3), "--journal", journal, home=tmp_path)
    status = stgcmt("status", "--journal", journal, home=tmp_path)
    assert status.returncode == 0
    assert "queued" not in status.stdout
    assert "files: 3 aborted" in status.stdout
    assert "cannot connect" in status.stdout  # the reason
    files = json.loads(stgcmt("status", "--journal", journal, "--json", home=tmp_path).stdout)
    assert files["files_by_state"] == {"aborted": 3}


# -- 4. no Storage Commitment; C-STORE failures are not failed references ------------------------


def test_archive_without_storage_commitment_is_named(instances, tmp_path):
    run = send_to_archive(NoCommitmentArchive(), *instances(2), home=tmp_path)
    assert run.returncode == 1
    assert run.stdout.count("the archive does not support Storage Commitment (no report)") >= 2
    assert "not in the report" not in run.stdout


def test_store_failure_is_not_counted_as_failed_reference(instances, tmp_path):
    paths = instances(3)
    archive = StoreFailingArchive(report="same")
    archive.refuse = uids(paths[:1])
    run = send_to_archive(archive, *paths, home=tmp_path)
    assert run.returncode == 1
    assert "C-STORE failed" in run.stdout
    assert "2 committed, 0 failed" in run.stderr  # the report's log line


# -- 5. progress stages; status with no arguments -----------------------------------------------


def test_progress_bar_shows_each_stage(archive_factory, instances, tmp_path):
    _, port = archive_factory(report="same", report_delay=0.6)
    master, slave = pty.openpty()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    command = [sys.executable, "-m", "stgcmt", "send", f"ARCHIVE@{LOCALHOST}:{port}"]
    command += [*map(str, instances(3)), "--aet", SCU]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    drawn = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    assert process.wait(timeout=30) == 0
    text = drawn.decode(errors="replace")
    assert "scanning" in text
    assert "C-STORE 3/3" in text
    assert "waiting for reports 0/1" in text
    assert "done 1/1" in text


def test_status_without_arguments_uses_the_default_journal(instances, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    nothing = stgcmt("status", home=tmp_path, cwd=cwd)
    assert nothing.returncode == 3
    assert "no SCP data dir ./stgcmt-data and no SCU journal" in nothing.stderr

    send_to(free_port(), *instances(1), home=tmp_path)  # default journal, aborted
    default = stgcmt("status", home=tmp_path, cwd=cwd)
    assert default.returncode == 0, default.stderr
    assert str(tmp_path / "state" / "stgcmt" / "scu-journal.sqlite") in default.stdout
    assert "aborted: 1" in default.stdout


# -- 6. hints: --max-refs, --listen --------------------------------------------------------------


def test_resource_limitation_suggests_max_refs(instances, tmp_path):
    run = send_to_archive(LimitedArchive(), *instances(4), home=tmp_path)
    assert run.returncode == 1
    assert "0x0213" in run.stdout
    assert "--max-refs N, e.g. --max-refs 2" in run.stdout


def test_no_report_without_listener_suggests_listen_or_agent(scp_factory, instances, tmp_path):
    scp = scp_factory(remotes=(remote(SCU, free_port()),), report_assoc="new")
    run = send_to(scp.port, *instances(1), "--timeout", "1", home=tmp_path, archive="STGCMT_SCP")
    assert run.returncode == 2
    hint = (
        "no report arrived on the sending association; this archive may report on a new"
        " association: use --listen PORT or run stgcmt agent"
    )
    assert hint in run.stdout and hint in run.stderr
