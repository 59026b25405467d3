"""The SCU agent's HTTP API against our SCP over real DICOM: a pending transaction whose
N-ACTION never reached the archive is requested again (and committed by the report that
follows), a failed transaction's files are sent again, and the agent's transactions, files and
archives are shown with statuses in hex and words; /metrics counts its associations."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from stgcmt.scu.dicomfiles import scan
from stgcmt.scu.options import SendOptions
from stgcmt.scu.send import send
from stgcmt.storage.scu_journal import ScuJournal

from support.common import LOCALHOST, PYTHON, free_port, remote, wait_for, write_instances
from support.http import Client, agent_with_http, metric_samples, scp_with_http
from support.pynetdicom_peer import Modality


@pytest.fixture
def agent(tmp_path: Path):
    with agent_with_http(tmp_path / "scu.sqlite", "CT1") as (agent, web):
        yield agent, Client(web.port)


def _state(client: Client, tx_id: int) -> str:
    return client.ok(f"/api/v1/transactions/{tx_id}")["state"]


def test_request_commitment_again_for_an_n_action_that_never_arrived(tmp_path, agent):
    agent, client = agent
    with scp_with_http(tmp_path / "scp", remotes=(remote("CT1", agent.port),)) as (scp, _):
        paths = write_instances(tmp_path / "out", 2)
        modality = Modality("CT1")
        try:
            assert modality.store(scp.port, paths) == [0, 0]  # the archive holds them
        finally:
            modality.stop()
        journal = ScuJournal(tmp_path / "scu.sqlite")  # what send left: pending, never asked
        try:
            files = scan(paths).files
            tx = journal.create("1.2.3.20", "CT1", f"STGCMT_SCP@{LOCALHOST}:{scp.port}", files)
            for seq in range(len(files)):
                journal.record_store(tx.id, seq, 0, True)
            journal.mark_requested(tx.id)
        finally:
            journal.close()
        assert scp.journal.in_state("received", "verifying", "report_pending", "delivered") == []

        listed = client.ok("/api/v1/transactions?state=pending")
        assert [t["transaction_uid"] for t in listed["items"]] == ["1.2.3.20"]
        answer = client.post(f"/api/v1/transactions/{tx.id}/request-commitment")
        assert answer.status == 200, answer.body
        assert answer.json["n_action_status"]["hex"] == "0x0000"
        assert wait_for(lambda: _state(client, tx.id) == "committed", 15)
        shown = client.ok(f"/api/v1/transactions/{tx.id}")
        assert {f["state"] for f in shown["files"]} == {"committed"}
        assert scp.wait_delivered("1.2.3.20", 5) is not None

        again = client.post(f"/api/v1/transactions/{tx.id}/request-commitment")
        assert again.status == 409 and "committed" in again.json["detail"]
        archives = client.ok("/api/v1/peers")["items"]
        assert [(a["archive_aet"], a["pending"]) for a in archives] == [("STGCMT_SCP", 0)]
        m = metric_samples(client.get("/metrics").text)
        assert m[("stgcmt_associations_total", (("outcome", "accepted"), ("reason", "")))] >= 1


def test_resend_the_failed_files_of_a_transaction(tmp_path, agent):
    agent, client = agent
    port = free_port()
    small = write_instances(tmp_path / "out", 2, pixel_bytes=64)
    big = write_instances(tmp_path / "out", 1, pixel_bytes=100_000)
    remotes = (remote("CT1", agent.port),)
    options = SendOptions(aet="CT1", report_assoc="same", timeout=15)
    with scp_with_http(tmp_path / "scp", port=port, remotes=remotes, max_store_bytes=20_000) as (
        scp,
        _,
    ):
        journal = ScuJournal(tmp_path / "scu.sqlite")
        try:
            assert send(remote("STGCMT_SCP", port), [*small, *big], journal, options).transactions
        finally:
            journal.close()
    (tx,) = client.ok("/api/v1/transactions")["items"]
    shown = client.ok(f"/api/v1/transactions/{tx['id']}")
    assert shown["state"] == "failed"
    refused = [f for f in shown["files"] if f["state"] == "store_failed"]
    assert [f["path"] for f in refused] == [str(big[0])]
    assert refused[0]["store_status"] == {
        "code": 0xA700,
        "hex": "0xA700",
        "words": "out of resources",
    }

    with scp_with_http(tmp_path / "scp", port=port, remotes=remotes) as (scp, _):  # room again
        answer = client.post(f"/api/v1/transactions/{tx['id']}/resend-failed")
        assert answer.status == 202, answer.body

        def resent():
            items = client.ok("/api/v1/transactions?state=committed")["items"]
            return items[0] if items else None

        new = wait_for(resent, 30)
        assert new is not None and new["id"] != tx["id"] and new["n_files"] == 1
        files = client.ok(f"/api/v1/transactions/{new['id']}")["files"]
        assert [f["path"] for f in files] == [str(big[0])]
        assert scp.store.path_for(files[0]["sop_instance_uid"]).exists()
    assert client.post("/api/v1/transactions/999/resend-failed").status == 404
    assert client.post(f"/api/v1/transactions/{new['id']}/resend-failed").status == 409


def test_stgcmt_agent_http_flag(tmp_path):
    """``stgcmt agent --http`` as users run it: its own process, the token beside the journal."""
    port, http = free_port(), free_port()
    journal = tmp_path / "state" / "scu.sqlite"
    with open(tmp_path / "agent.log", "ab") as log:
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "stgcmt",
                "agent",
                "--aet",
                "CT1",
                "--bind",
                LOCALHOST,
                "--port",
                str(port),
                "--journal",
                str(journal),
                "--http",
                f"{LOCALHOST}:{http}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        token_file = journal.parent / "http-token"

        def up() -> bool:
            try:
                return token_file.exists() and Client(http).get("/healthz").status == 200
            except OSError:  # not listening yet
                return False

        assert wait_for(up, 30), (tmp_path / "agent.log").read_text()
        assert Client(http, token=None).ok("/healthz")["role"] == "agent"
        client = Client(http, token=token_file.read_text().strip())
        assert client.ok("/api/v1/status")["transactions_by_state"]["pending"] == 0
        assert Client(http, token="nope").get("/api/v1/status").status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
