"""``/metrics`` over real HTTP, parsed by prometheus-client's own parser, equals what the test
sent: C-STOREs by status and their bytes, N-ACTIONs, reports delivered and failed, pending
reports, associations by outcome and rejection reason, and the histograms' counts."""

from __future__ import annotations

from pathlib import Path

from support.common import free_port, remote, wait_for, write_instances
from support.http import Client, dataset_size, metric_samples, scp_with_http
from support.pynetdicom_peer import Modality, refs_of


def test_metrics_equal_what_was_sent(tmp_path: Path):
    modality, other, stranger = Modality("MODALITY"), Modality("OTHER"), Modality("STRANGER")
    small = write_instances(tmp_path / "small", 3, pixel_bytes=64)
    (big,) = write_instances(tmp_path / "big", 1, pixel_bytes=100_000)
    try:
        remotes = (remote("MODALITY", modality.listen()), remote("OTHER", free_port()))
        with scp_with_http(tmp_path / "scp", remotes=remotes, max_store_bytes=20_000) as (
            scp,
            web,
        ):
            client = Client(web.port)
            assert modality.store(scp.port, [*small, big]) == [0, 0, 0, 0xA700]  # over quota
            assert modality.commit(scp.port, refs_of(small), "1.2.3.10") == 0
            assert modality.wait_report(15)
            assert other.commit(scp.port, refs_of(small[:1]), "1.2.3.11") == 0  # nobody listens
            assert stranger.associate(scp.port).is_rejected

            def metrics() -> dict:
                answer = Client(web.port, token=None).get("/metrics")
                assert answer.status == 200
                assert answer.headers["Content-Type"].startswith("text/plain")
                return metric_samples(answer.text)

            wait_for(lambda: metrics()[("stgcmt_report_attempts_failed_total", ())] >= 1, 15)
            wait_for(lambda: metrics()[("stgcmt_reports_delivered_total", (("via", "new"),))], 5)
            m = metrics()
            assert m[("stgcmt_c_store_total", (("status", "0x0000"),))] == 3
            assert m[("stgcmt_c_store_total", (("status", "0xA700"),))] == 1
            sent = sum(dataset_size(p) for p in [*small, big])
            assert m[("stgcmt_received_bytes_total", ())] == sent
            assert m[("stgcmt_c_store_seconds_count", ())] == 4
            assert m[("stgcmt_n_action_total", (("status", "0x0000"),))] == 2
            assert m[("stgcmt_reports_delivered_total", (("via", "new"),))] == 1
            assert m[("stgcmt_report_latency_seconds_count", ())] == 1
            assert m[("stgcmt_report_attempts_failed_total", ())] >= 1
            assert m[("stgcmt_reports_given_up_total", ())] == 0
            assert m[("stgcmt_pending_reports", ())] == 1  # OTHER's
            accepted = (("outcome", "accepted"), ("reason", ""))
            assert m[("stgcmt_associations_total", accepted)] == 3
            rejected = (("outcome", "rejected"), ("reason", "calling-aet"))
            assert m[("stgcmt_associations_total", rejected)] == 1
            alerts = (("kind", "rejected-association"),)
            assert m[("stgcmt_security_alerts_total", alerts)] == 1

            (pending,) = client.ok("/api/v1/transactions?state=report_pending")["items"]
            assert client.post(f"/api/v1/transactions/{pending['id']}/give-up").status == 200
            m = metrics()
            assert m[("stgcmt_reports_given_up_total", ())] == 1
            assert m[("stgcmt_pending_reports", ())] == 0
    finally:
        for peer in (modality, other, stranger):
            peer.stop()


def test_each_server_has_its_own_registry(tmp_path: Path):
    """Two archives in one process: one's C-STOREs never show in the other's metrics."""
    modality = Modality("MODALITY")
    try:
        with (
            scp_with_http(tmp_path / "a", accept_unknown=True) as (scp_a, web_a),
            scp_with_http(tmp_path / "b", accept_unknown=True) as (_, web_b),
        ):
            assert modality.store(scp_a.port, write_instances(tmp_path / "in", 2)) == [0, 0]
            ok = ("stgcmt_c_store_total", (("status", "0x0000"),))
            a = metric_samples(Client(web_a.port).get("/metrics").text)
            b = metric_samples(Client(web_b.port).get("/metrics").text)
            assert a[ok] == 2 and ok not in b
    finally:
        modality.stop()
