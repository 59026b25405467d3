"""The archive's JSON API over real HTTP, against our SCP with real DICOM traffic from a
pynetdicom modality: what an administrator asks (which transactions, filtered; one with its
references and Failure Reasons; which instances are durable; which peer is failing) and the
actions (retry a report now, give it up, verify again), with the errors scripts rely on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from stgcmt.config import RetryPolicy
from stgcmt.dicom.commitment import Reference

from support.common import SECONDARY_CAPTURE, free_port, remote, wait_for
from support.http import Client, scp_with_http
from support.pynetdicom_peer import Modality, refs_of, report_content

SLOW_RETRY = RetryPolicy(start=600, cap=600, give_up_after=3600)
"""After a failed delivery, the next attempt is 10 minutes away: only the API can hurry it."""


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


@pytest.fixture
def archive(tmp_path: Path, modality: Modality):
    """An SCP that reports to the modality's listener, with its HTTP server and a client."""
    with scp_with_http(tmp_path / "scp", remotes=(remote("MODALITY", modality.listen()),)) as (
        scp,
        web,
    ):
        yield scp, Client(web.port)


def _stored_and_committed(scp, modality, instances, uid: str, **kw) -> list[Path]:
    paths = instances(2, **kw)
    assert modality.store(scp.port, paths) == [0, 0]
    assert modality.commit(scp.port, refs_of(paths), uid) == 0
    assert scp.wait_delivered(uid, 15) is not None
    return paths


def test_transactions_filtered_by_what_an_administrator_knows(archive, modality, instances):
    scp, client = archive
    study = generate_uid()
    before = time.time()
    first = _stored_and_committed(
        scp, modality, instances, "1.2.3.1", patient_id="PAT-A", study=study
    )
    middle = time.time()
    _stored_and_committed(scp, modality, instances, "1.2.3.2", patient_id="PAT-B")

    everything = client.ok("/api/v1/transactions")
    assert everything["total"] == 2
    assert [t["transaction_uid"] for t in everything["items"]] == ["1.2.3.2", "1.2.3.1"]
    assert {t["state"] for t in everything["items"]} == {"delivered"}
    assert everything["items"][0]["state_words"] == "delivered"

    def uids(query: str) -> list[str]:
        return [t["transaction_uid"] for t in client.ok(f"/api/v1/transactions?{query}")["items"]]

    assert uids("patient_id=PAT-A") == ["1.2.3.1"]
    assert uids(f"study_uid={study}") == ["1.2.3.1"]
    assert uids("transaction_uid=1.2.3.2") == ["1.2.3.2"]
    assert uids("calling_aet=MODALITY&state=delivered") == ["1.2.3.2", "1.2.3.1"]
    assert uids("state=report_pending") == []
    assert uids("calling_aet=OTHER") == []
    assert uids(f"since={middle}") == ["1.2.3.2"]
    assert uids(f"since={before}&until={middle}") == ["1.2.3.1"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle + 3600)) + "Z"
    assert uids(f"since={iso}") == []

    page = client.ok("/api/v1/transactions?limit=1&offset=1")
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
    assert [t["transaction_uid"] for t in page["items"]] == ["1.2.3.1"]

    found = client.ok("/api/v1/instances?patient_id=PAT-A")
    assert found["total"] == 2
    assert {i["sop_instance_uid"] for i in found["items"]} == {p.stem for p in first}
    assert all(i["durable"] is True and i["study_instance_uid"] == study for i in found["items"])
    assert not any(i["unsafe"] for i in found["items"])
    one = client.ok(f"/api/v1/instances?sop_instance_uid={first[0].stem}")
    assert [i["sop_instance_uid"] for i in one["items"]] == [first[0].stem]


def test_one_transaction_shows_references_and_failure_reasons(archive, modality, instances):
    scp, client = archive
    paths = instances(2, patient_id="PAT-C")
    assert modality.store(scp.port, paths) == [0, 0]
    missing = Reference(SECONDARY_CAPTURE, generate_uid())
    assert modality.commit(scp.port, [*refs_of(paths), missing], "1.2.3.3") == 0
    tx = scp.wait_delivered("1.2.3.3", 15)

    shown = client.ok(f"/api/v1/transactions/{tx.id}")
    assert (shown["transaction_uid"], shown["state"], shown["n_refs"]) == (
        "1.2.3.3",
        "delivered",
        3,
    )
    assert (shown["n_committed"], shown["n_failed"]) == (2, 1)
    by_uid = {r["sop_instance_uid"]: r for r in shown["references"]}
    assert by_uid[missing.sop_instance_uid]["failure_reason"] == {
        "code": 0x0112,
        "hex": "0x0112",
        "words": "no such object instance",
    }
    assert by_uid[missing.sop_instance_uid]["outcome"] == "failed"
    assert by_uid[missing.sop_instance_uid]["in_index"] is False
    for path in paths:
        ref = by_uid[path.stem]
        assert (ref["outcome"], ref["failure_reason"], ref["durable"]) == ("committed", None, True)
        assert ref["patient_id"] == "PAT-C"
    delivery = shown["delivery"]
    assert delivery["attempts"] == 1 and delivery["delivered_via"].startswith("a new association")
    assert [a["outcome"] for a in delivery["history"]] == ["delivered"]
    assert client.ok(f"/api/v1/transactions/{tx.id}?refs_limit=1&refs_offset=2")["references"] == [
        by_uid[missing.sop_instance_uid]
    ]


def test_retry_give_up_and_reverify_go_through_the_scp(tmp_path, instances):
    """A modality whose listener is down: the first delivery fails and the next is 10 minutes
    away. The API re-verifies (an instance arrived since), retries at once (the modality gets
    the report, now all committed), and gives another report up."""
    port = free_port()
    modality = Modality("MODALITY")
    try:
        with scp_with_http(
            tmp_path / "scp", remotes=(remote("MODALITY", port),), retry=SLOW_RETRY
        ) as (scp, web):
            client = Client(web.port)
            late, on_time = instances(1), instances(1)
            assert modality.store(scp.port, on_time) == [0]
            assert modality.commit(scp.port, refs_of(on_time + late), "1.2.3.4") == 0
            assert modality.commit(scp.port, refs_of(on_time), "1.2.3.5") == 0

            def failed_once(uid: str):  # (a new association from the AE retries at once)
                page = client.ok(f"/api/v1/transactions?transaction_uid={uid}")["items"]
                return page[0] if page and page[0]["attempts"] >= 1 else None

            tx = wait_for(lambda: failed_once("1.2.3.4"), 15)
            other = wait_for(lambda: failed_once("1.2.3.5"), 15)
            assert tx["state"] == other["state"] == "report_pending"
            assert "MODALITY" in tx["last_error"] and tx["next_attempt_at"] > time.time() + 300
            peers = client.ok("/api/v1/peers")["items"]
            assert [(p["aet"], p["reports_pending"]) for p in peers] == [("MODALITY", 2)]
            assert peers[0]["last_delivery_error"] and peers[0]["next_attempt_at"]
            delivery = client.ok(f"/api/v1/transactions/{tx['id']}")["delivery"]
            history = delivery["history"]
            assert {h["outcome"] for h in history} == {"failed"} and history[0]["error"]
            assert len(history) == delivery["attempts"]

            assert modality.store(scp.port, late) == [0]
            answer = client.post(f"/api/v1/transactions/{tx['id']}/reverify")
            assert answer.status == 202, answer.body
            wait_for(lambda: client.ok(f"/api/v1/transactions/{tx['id']}")["n_failed"] == 0, 15)

            given_up = client.post(f"/api/v1/transactions/{other['id']}/give-up")
            assert given_up.status == 200 and given_up.json["state"] == "given_up"
            assert client.post(f"/api/v1/transactions/{other['id']}/retry").status == 409

            modality.listen(port)
            answer = client.post(f"/api/v1/transactions/{tx['id']}/retry")
            assert answer.status == 202, answer.body
            assert modality.wait_report(15)
            committed, failed = report_content(modality.reports[0][1])
            assert committed == {p.stem for p in on_time + late} and not failed
            done = wait_for(
                lambda: client.ok(f"/api/v1/transactions/{tx['id']}")["state"] == "delivered", 10
            )
            assert done
            assert len(modality.reports) == 1  # the given-up report never went out
    finally:
        modality.stop()


def test_delivery_attempts_are_listed_with_their_errors_and_survive_a_restart(
    scp_backend, instances
):
    """A modality whose listener is down: the transaction's view lists each failed attempt
    (new association, the error, the next attempt). The archive restarts, the listener is up:
    the report is delivered, and the view shows the attempts of both runs, in order."""
    port = free_port()
    modality = Modality("MODALITY")
    config = {"remotes": (remote("MODALITY", port),), "database": scp_backend.database()}
    try:
        with scp_with_http(scp_backend.data_dir, **config) as (scp, web):
            client = Client(web.port)
            paths = instances(1)
            assert modality.store(scp.port, paths) == [0]
            assert modality.commit(scp.port, refs_of(paths), "1.2.3.6") == 0

            def failed_twice():
                page = client.ok("/api/v1/transactions?transaction_uid=1.2.3.6")["items"]
                return page[0] if page and page[0]["attempts"] >= 2 else None

            tx_id = wait_for(failed_twice, 15)["id"]
            before = client.ok(f"/api/v1/transactions/{tx_id}")["delivery"]["history"]
        assert len(before) >= 2
        assert {(a["via"], a["outcome"]) for a in before} == {("new", "failed")}
        assert all(f"MODALITY@127.0.0.1:{port}" in a["error"] for a in before)
        assert all(a["next_attempt_at"] > a["at"] for a in before)
        modality.listen(port)
        with scp_with_http(scp_backend.data_dir, **config) as (scp, web):
            assert modality.wait_report(15)
            assert scp.wait_delivered("1.2.3.6", 15) is not None
            shown = Client(web.port).ok(f"/api/v1/transactions/{tx_id}")
    finally:
        modality.stop()
    history = shown["delivery"]["history"]
    assert history[: len(before)] == before  # the first run's attempts, from the journal
    last = history[-1]
    assert (last["via"], last["outcome"], last["error"]) == ("new", "delivered", None)
    assert {a["outcome"] for a in history[len(before) : -1]} <= {"failed"}
    assert len(history) == shown["attempts"]
    assert {a["node"] for a in history} == {None if scp_backend.url is None else "node-a"}
    assert len(modality.reports) == 1


BAD_QUERIES = {
    "/api/v1/transactions?state=lost": "state",
    "/api/v1/transactions?transaction_uid=1.02.x": "not a UID",
    "/api/v1/transactions?since=yesterday": "ISO 8601",
    "/api/v1/transactions?since=nan": "ISO 8601",
    "/api/v1/transactions?until=1e400": "ISO 8601",
    "/api/v1/transactions?limit=%C2%B2": "limit",
    "/api/v1/transactions/%C2%B2": "not a number",
    "/api/v1/transactions?limit=0": "limit",
    "/api/v1/transactions?limit=9999": "limit",
    "/api/v1/transactions?stat=delivered": "unknown parameter",
    "/api/v1/transactions?state=delivered&state=given_up": "once",
    "/api/v1/transactions?calling_aet=" + "A" * 17: "AE",
    "/api/v1/instances?patient_id=" + "P" * 65: "64",
    "/api/v1/instances?unsafe=yes": "not one of true, false",
    "/api/v1/transactions/abc": "not a number",
}
"""GET requests the API must refuse with 400 bad-request: path -> what the detail names."""
OTHER_ERRORS = [
    ("GET", "/api/v1/transactions/4242", 404, "not-found", "#4242"),
    ("POST", "/api/v1/transactions/4242/retry", 404, "not-found", "#4242"),
    ("GET", "/api/v1/transactions/1/retry", 405, "method-not-allowed", "GET"),
    ("DELETE", "/api/v1/transactions", 405, "method-not-allowed", "DELETE"),
    ("GET", "/api/v2/transactions", 404, "not-found", "openapi"),
]
"""(method, path, status, error, what the detail names) for the other refusals."""


@pytest.mark.parametrize(
    ("method", "path", "status", "error", "says"),
    [("GET", path, 400, "bad-request", says) for path, says in BAD_QUERIES.items()] + OTHER_ERRORS,
)
def test_bad_requests_get_the_right_status_and_a_json_error(
    archive, method, path, status, error, says
):
    _, client = archive
    answer = client.request(method, path)
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json["error"] == error
    assert says in answer.json["detail"]


def test_an_action_the_state_does_not_allow_is_a_conflict(archive, modality, instances):
    scp, client = archive
    _stored_and_committed(scp, modality, instances, "1.2.3.6")
    (tx,) = client.ok("/api/v1/transactions")["items"]
    for action in ("retry", "give-up", "reverify"):
        answer = client.post(f"/api/v1/transactions/{tx['id']}/{action}")
        assert answer.status == 409, (action, answer.body)
        assert "delivered" in answer.json["detail"]
    assert client.ok(f"/api/v1/transactions/{tx['id']}")["state"] == "delivered"


def test_openapi_document_lists_every_route(archive):
    _, client = archive
    document = client.ok("/api/v1/openapi.json")
    assert document["openapi"].startswith("3.")
    assert {
        "/api/v1/transactions",
        "/api/v1/transactions/{id}",
        "/api/v1/transactions/{id}/retry",
        "/api/v1/transactions/{id}/give-up",
        "/api/v1/transactions/{id}/reverify",
        "/api/v1/instances",
        "/api/v1/peers",
        "/healthz",
        "/metrics",
    } <= set(document["paths"])
    instances = document["paths"]["/api/v1/instances"]["get"]["parameters"]
    (unsafe,) = [p for p in instances if p["name"] == "unsafe"]
    assert unsafe["schema"]["enum"] == ["true", "false"]
