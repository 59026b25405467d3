"""The SCP as users run it: ``stgcmt scp`` in its own process, killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE

from support.common import LOCALHOST, PYTHON, free_port, wait_for
from support.pynetdicom_peer import Modality, refs_of
from support.scp_process import ScpProcess


@pytest.fixture
def run_scp(tmp_path: Path):
    started: list[ScpProcess] = []

    def run(args: list[str]) -> ScpProcess:
        scp = ScpProcess(tmp_path, args).start()
        started.append(scp)
        return scp

    yield run
    for scp in started:
        if scp.proc and scp.proc.poll() is None:
            scp.kill()


def _config(tmp_path: Path, modality_port: int) -> Path:
    path = tmp_path / "archive.toml"
    path.write_text(
        f"""
[scp]
aet = "ARCHIVE"
bind = "{LOCALHOST}"
data_dir = "{tmp_path / "archive-data"}"

[[remote]]
aet = "MODALITY"
host = "{LOCALHOST}"
port = {modality_port}

[retry]
start = 0.2
cap = 0.5
give_up_after = 3600
"""
    )
    return path


def _status(tmp_path: Path) -> dict:
    out = subprocess.run(
        [PYTHON, "-m", "stgcmt", "status", "--data-dir", str(tmp_path / "archive-data"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


def test_kill_9_after_n_action_response_report_arrives_after_restart(tmp_path, run_scp, instances):
    modality = Modality("MODALITY", called="ARCHIVE")
    listen = free_port()  # the modality's listener is down: delivery has to wait
    port = free_port()
    args = ["--config", str(_config(tmp_path, listen)), "--port", str(port)]
    scp = run_scp(args)
    paths = instances(5)
    assert modality.store(port, paths) == [0] * 5
    assert modality.commit(port, refs_of(paths), "1.2.3.300") == 0

    assert scp.kill() == -signal.SIGKILL  # acknowledged, not yet delivered
    pending = _status(tmp_path)
    assert pending["transactions"][0]["state"] in ("received", "verifying", "report_pending")

    modality.listen(listen)
    try:
        run_scp(args)
        assert modality.wait_report(20)
        _, information, how = modality.reports[0]
        assert how == "new"
        assert information.TransactionUID == "1.2.3.300"
        assert len(information.ReferencedSOPSequence) == 5
        delivered = wait_for(lambda: _status(tmp_path)["transactions_by_state"]["delivered"], 10)
        assert delivered == 1
    finally:
        modality.stop()


def test_status_shows_pending_report_and_last_error(tmp_path, run_scp, instances):
    modality = Modality("MODALITY", called="ARCHIVE")
    port = free_port()
    run_scp(["--config", str(_config(tmp_path, free_port())), "--port", str(port)])
    paths = instances(1)
    modality.store(port, paths)
    assert modality.commit(port, refs_of(paths), "1.2.3.301") == 0
    status = wait_for(
        lambda: (
            (s := _status(tmp_path))["transactions"] and s["transactions"][0]["attempts"] >= 1 and s
        ),
        15,
    )
    assert status["instances"] == 1
    tx = status["transactions"][0]
    assert tx["state"] == "report_pending"
    assert tx["calling_aet"] == "MODALITY"
    assert "cannot connect" in tx["last_error"]
    text = subprocess.run(
        [PYTHON, "-m", "stgcmt", "status", "--data-dir", str(tmp_path / "archive-data")],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "report pending" in text and "1.2.3.301" in text and "last error" in text


def test_zero_config_start_and_clean_stop(tmp_path, run_scp):
    port = free_port()
    scp = run_scp(["--port", str(port), "--bind", LOCALHOST])
    ae = AE("ECHOER")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(LOCALHOST, port, ae_title="STGCMT_SCP")
    # Zero config knows no peers: the association is refused, politely and logged.
    assert assoc.is_rejected
    assert (tmp_path / "stgcmt-data" / "index.sqlite").exists()
    assert scp.kill(signal.SIGTERM) == 0
    assert "not a known peer" in scp.log.read_text()


def test_bad_config_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[scp]\nreport_assoc = "sometimes"\n')
    result = subprocess.run(
        [PYTHON, "-m", "stgcmt", "scp", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert result.returncode == 3
    assert "[scp] report_assoc: expected one of" in result.stderr
