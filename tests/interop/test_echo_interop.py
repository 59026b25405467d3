"""C-ECHO with other implementations: ``stgcmt echo`` against DCMTK storescp and Orthanc, and
DCMTK echoscu against our agent (Verification-only associations are answered for anyone)."""

from __future__ import annotations

import json
import subprocess
import sys

from stgcmt.scu.agent import Agent

from support.common import LOCALHOST, free_port
from support.interop import SCU_AET, Dcmtk, OrthancPeer, StoreScp
from support.scu import pending_transaction

SCU = "CT1"


def stgcmt_echo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stgcmt", "echo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_stgcmt_echo_dcmtk_storescp(storescp: StoreScp):
    done = stgcmt_echo("--json", f"{storescp.aet}@{LOCALHOST}:{storescp.port}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["attempts"][0]["status_words"] == "0x0000 success"
    assert result["round_trip_ms"]["min"] > 0


def test_stgcmt_echo_dcmtk_storescp_wrong_called_ae(storescp: StoreScp):
    done = stgcmt_echo(f"NOT_{storescp.aet}@{LOCALHOST}:{storescp.port}")
    # storescp accepts any called AE title unless told otherwise: this still answers
    assert done.returncode == 0, done.stdout + done.stderr


def test_stgcmt_echo_orthanc(orthanc: OrthancPeer):
    peer = orthanc.server.remote
    done = stgcmt_echo("--aet", SCU_AET, f"{peer.aet}@{peer.host}:{peer.port}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0x0000 success in" in done.stdout


def test_dcmtk_echoscu_against_our_agent(dcmtk: Dcmtk, scu_journal, tmp_path):
    pending_transaction(scu_journal, tmp_path / "out", 1)  # ARCHIVE@127.0.0.1 may report
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        for aet in ("ARCHIVE", "UNKNOWN_PACS"):
            done = dcmtk.run("echoscu", "-aet", aet, "-aec", SCU, LOCALHOST, str(agent.port))
            assert done.returncode == 0, (aet, done.stdout, done.stderr)
        wrong = dcmtk.run(
            "echoscu", "-aet", "ARCHIVE", "-aec", "NOBODY", LOCALHOST, str(agent.port)
        )
        assert wrong.returncode != 0
        assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr


def test_stgcmt_echo_unreachable_exit_2():
    done = stgcmt_echo("-to", "2", f"NOBODY@{LOCALHOST}:{free_port()}")
    assert done.returncode == 2
