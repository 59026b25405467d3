"""``stgcmt echo`` (a subprocess) against our SCP and our agent over real sockets; the
Verification trust rule of the SCU listener; negotiation logging (rejected contexts at INFO,
the A-ASSOCIATE-RQ/AC dump at DEBUG). DCMTK and Orthanc: tests/interop/test_echo_interop.py."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from pydicom.uid import ExplicitVRLittleEndian

from stgcmt import ul
from stgcmt.dicom.status import PROCESSING_FAILURE
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.scu.agent import Agent
from stgcmt.scu.echo import EXIT_ECHO_FAILED, EXIT_ECHO_OK, EXIT_ECHO_UNREACHABLE, echo
from stgcmt.scu.reports import ReportHandler

from support.common import LOCALHOST, free_port, remote
from support.scu import pending_transaction

SCU = "CT1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def stgcmt_echo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stgcmt", "echo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_echo_our_scp_from_a_known_ae(scp_factory):
    scp = scp_factory(remotes=(remote(SCU, 11112),))
    done = stgcmt_echo("--aet", SCU, f"STGCMT_SCP@{LOCALHOST}:{scp.port}")
    assert done.returncode == EXIT_ECHO_OK, done.stderr
    assert "0x0000 success in" in done.stdout
    assert " ms" in done.stdout


def test_echo_our_scp_from_an_unknown_ae_is_rejected_in_words(scp_factory):
    scp = scp_factory(remotes=(remote(SCU, 11112),))
    done = stgcmt_echo("--aet", "STRANGER", "--json", f"STGCMT_SCP@{LOCALHOST}:{scp.port}")
    assert done.returncode == EXIT_ECHO_FAILED
    result = json.loads(done.stdout)
    assert result["exit_status"] == EXIT_ECHO_FAILED
    (attempt,) = result["attempts"]
    assert attempt["status"] is None
    assert "rejected the association: calling AE title not recognised" in attempt["error"]


def test_echo_json_and_repeat(scp_factory):
    scp = scp_factory(remotes=(remote(SCU, 11112),))
    done = stgcmt_echo("--aet", SCU, "--json", "-r", "3", f"STGCMT_SCP@{LOCALHOST}:{scp.port}")
    assert done.returncode == EXIT_ECHO_OK, done.stderr
    result = json.loads(done.stdout)
    assert result["succeeded"] == 3
    assert [a["status_hex"] for a in result["attempts"]] == ["0x0000"] * 3
    assert all(a["status_words"] == "0x0000 success" for a in result["attempts"])
    assert 0 < result["round_trip_ms"]["min"] <= result["round_trip_ms"]["max"]


def test_echo_nobody_listening_exits_2():
    port = free_port()
    done = stgcmt_echo("--json", "-to", "2", f"NOBODY@{LOCALHOST}:{port}")
    assert done.returncode == EXIT_ECHO_UNREACHABLE
    result = json.loads(done.stdout)
    assert result["exit_status"] == EXIT_ECHO_UNREACHABLE
    assert "cannot connect" in result["attempts"][0]["error"]
    plain = stgcmt_echo("-to", "2", f"NOBODY@{LOCALHOST}:{port}")
    assert plain.returncode == EXIT_ECHO_UNREACHABLE
    assert "cannot connect" in plain.stdout


def test_echo_usage_error_exits_3():
    assert stgcmt_echo("not-a-peer").returncode == 3


def test_agent_answers_echo_from_the_archive_and_from_anyone(scu_journal, tmp_path, caplog):
    pending_transaction(scu_journal, tmp_path / "out", 1)  # ARCHIVE@127.0.0.1 may report
    caplog.set_level(logging.INFO)
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        for aet in ("ARCHIVE", "SOMEONE_ELSE"):  # the archive, and an AE nobody knows
            done = stgcmt_echo("--aet", aet, f"{SCU}@{LOCALHOST}:{agent.port}")
            assert done.returncode == EXIT_ECHO_OK, (aet, done.stdout, done.stderr)
            assert "0x0000 success" in done.stdout
        misdirected = stgcmt_echo("--aet", "ARCHIVE", f"NOT_{SCU}@{LOCALHOST}:{agent.port}")
        assert misdirected.returncode == EXIT_ECHO_FAILED
        assert "called AE title not recognised" in misdirected.stdout
    accepted = [
        r.getMessage() for r in caplog.records if "proposing only Verification" in r.message
    ]
    assert len(accepted) == 2
    answered = [r for r in caplog.records if "C-ECHO from" in r.getMessage()]
    assert len(answered) == 2 and all(r.levelno == logging.INFO for r in answered)


def test_agent_still_rejects_an_unknown_ae_proposing_commitment(scu_journal):
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        plan = ul.ContextPlan(commitment="scp", echo=True)
        try:
            ul.open_association("SOMEONE_ELSE", remote(SCU, agent.port), plan)
        except ul.AssociationError as exc:
            assert "calling AE title not recognised" in str(exc)
        else:
            raise AssertionError("accepted an unknown AE proposing Storage Commitment")


def test_report_on_a_verification_only_association_is_refused(scu_journal, tmp_path):
    pending_transaction(scu_journal, tmp_path / "out", 1)
    handler = ReportHandler(scu_journal, SCU)
    stranger = ul.PeerInfo("STRANGER", SCU, "10.9.9.9", 4000, 1, (VERIFICATION,))
    assert handler.accept(stranger) is None
    archive = ul.PeerInfo("ARCHIVE", SCU, LOCALHOST, 4001, 2, (VERIFICATION,))
    report = ul.EventReport(archive, 1, b"")
    assert handler.on_report(report, "new association") == PROCESSING_FAILURE
    committing = ul.PeerInfo("STRANGER", SCU, "10.9.9.9", 4002, 3, (STORAGE_COMMITMENT_PUSH_MODEL,))
    assert handler.accept(committing) is not None


def test_rejected_contexts_logged_once_each_side_in_words(scp_factory, caplog):
    scp = scp_factory(remotes=(remote(SCU, 11112),))
    caplog.set_level(logging.DEBUG, logger="stgcmt.engine")
    plan = ul.ContextPlan(
        storage=[("1.2.3.4.5.6", ExplicitVRLittleEndian), (CT_IMAGE, "1.2.3.999")],
        commitment="scu",
    )
    with ul.open_association(SCU, remote("STGCMT_SCP", scp.port), plan) as association:
        assert association.accepts_commitment
        assert association.c_echo() is None  # Verification was not proposed
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    for side in ("us", "the peer"):
        unknown = [m for m in messages if f"rejected by {side}: 1.2.3.4.5.6 (unknown)" in m]
        assert len(unknown) == 1, messages
        assert unknown[0].endswith("abstract syntax not supported (provider rejection)")
        syntax = [m for m in messages if f"rejected by {side}: {CT_IMAGE} (CT Image Storage)" in m]
        assert len(syntax) == 1, messages
        assert "transfer syntaxes 1.2.3.999" in syntax[0]
        assert syntax[0].endswith("transfer syntaxes not supported (provider rejection)")
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    for dump in ("A-ASSOCIATE-RQ sent", "A-ASSOCIATE-RQ received", "A-ASSOCIATE-AC sent"):
        assert dump in debug
    assert "A-ASSOCIATE-AC received" in debug
    assert f"called AE: 'STGCMT_SCP', calling AE: '{SCU}'" in debug
    assert "max PDU length:" in debug and "implementation class UID:" in debug
    assert (
        f"{STORAGE_COMMITMENT_PUSH_MODEL} (Storage Commitment Push Model SOP Class): acceptance"
        in debug
    )
    assert "role selection:" in debug


def test_echo_function_logs_the_echo_on_both_sides(scp_factory, caplog):
    scp = scp_factory(remotes=(remote(SCU, 11112),))
    caplog.set_level(logging.INFO)
    result = echo(SCU, remote("STGCMT_SCP", scp.port), repeat=2)
    assert result.exit_status == EXIT_ECHO_OK
    ours = [r for r in caplog.records if r.getMessage().startswith("C-ECHO to ")]
    assert len(ours) == 2
    theirs = [r for r in caplog.records if "C-ECHO from" in r.getMessage()]
    assert len(theirs) == 2  # one association each: one INFO line each
