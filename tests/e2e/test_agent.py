"""``stgcmt agent``: late reports, after ``send`` gave up waiting, over real sockets."""

from __future__ import annotations

import signal
import subprocess
import sys

from stgcmt.dicom.commitment import CommitmentReport
from stgcmt.dicom.status import PROCESSING_FAILURE
from stgcmt.scu.agent import Agent
from stgcmt.scu.send import EXIT_PENDING, SendOptions, send

from support.common import LOCALHOST, free_port, remote, wait_for
from support.pynetdicom_archive import Archive
from support.scu import pending_transaction, refs

SCU = "CT1"


def test_report_after_send_timed_out_is_honoured_by_the_agent(scp_factory, instances, scu_journal):
    agent_port = free_port()
    scp = scp_factory(remotes=(remote(SCU, agent_port),), report_assoc="new")
    paths = instances(3)
    opts = SendOptions(aet=SCU, on_commit="delete", timeout=0.2, same_assoc_wait=0)

    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, opts)
    assert result.exit_status == EXIT_PENDING
    assert all(p.exists() for p in paths)

    with Agent(scu_journal.path, SCU, LOCALHOST, agent_port):  # the SCP retries delivery
        assert wait_for(lambda: not any(p.exists() for p in paths), 15)
    tx = scu_journal.get(1)
    assert tx.state == "committed"
    assert tx.report_via.startswith("new association from STGCMT_SCP")


def test_agent_start_finishes_actions_a_crash_left_due(scu_journal, tmp_path):
    files = pending_transaction(scu_journal, tmp_path / "out", 2, on_commit="delete")
    scu_journal.record_report(CommitmentReport("1.2.3.9", committed=refs(files)), "test")
    assert all(f.path.exists() for f in files)  # recorded committed, then "crashed"

    with Agent(scu_journal.path, SCU, LOCALHOST, 0):
        assert not any(f.path.exists() for f in files)


def test_unknown_transaction_gets_processing_failure(scu_journal, tmp_path):
    pending_transaction(scu_journal, tmp_path / "out", 1)  # ARCHIVE@127.0.0.1 may report
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        for role_item in (True, False):
            archive = Archive(report_to=(SCU, agent.port), role_item=role_item)
            status = archive.deliver_on_new_association(CommitmentReport("1.2.3.404"))
            assert status == PROCESSING_FAILURE


def test_association_for_another_ae_title_is_rejected(scu_journal):
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        archive = Archive(report_to=("SOMEONE_ELSE", agent.port))
        assert archive.deliver_on_new_association(CommitmentReport("1.2.3.4")) is None


def test_agent_command_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "stgcmt", "agent", "--aet", SCU, "--bind", LOCALHOST]
    command += ["--port", str(port), "--journal", str(tmp_path / "j.sqlite")]
    command += ["--reporter", f"ARCHIVE@{LOCALHOST}"]  # nothing pending: only a named reporter
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        archive = Archive(report_to=(SCU, port))
        assert wait_for(
            lambda: archive.deliver_on_new_association(CommitmentReport("1.2.3.5")), 15, 0.2
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stderr.read()
    assert "unknown Transaction UID 1.2.3.5" in log
    assert "agent CT1 stopped" in log
