""""Which instances must the modality send again?" answered without SQL. The archive's disk
answers the durability barrier's fsync with EIO while a pynetdicom modality stores and asks for
commitment: those copies are unsafe (never committed, 0110H). The administrator finds them in
the JSON API (``?unsafe=true``), ``/api/v1/status``, ``/metrics`` and ``stgcmt status`` (a real
process beside the live archive), and sees them go once the modality sent them again."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from stgcmt.storage import fsync as fsync_module

from support.common import PYTHON, remote, wait_for
from support.http import Client, metric_samples, scp_with_http
from support.pynetdicom_peer import Modality, refs_of, report_content

PROCESSING_FAILURE = 0x0110
REPORT_WAIT = 15
UNSAFE_GAUGE = ("stgcmt_instances_unsafe", ())


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


def _failing_fsync(path) -> None:  # the disk answers the barrier's fsync with an error
    raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))


def _stgcmt_status(data_dir: Path, *json_flag: str) -> str:
    done = subprocess.run(
        [PYTHON, "-m", "stgcmt", "status", "--data-dir", str(data_dir), *json_flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _unsafe_gauge(port: int) -> float:
    """``stgcmt_instances_unsafe`` as a Prometheus scraper reads it (no credentials)."""
    return metric_samples(Client(port, token=None).get("/metrics").text)[UNSAFE_GAUGE]


def _stems(paths: list[Path]) -> set[str]:
    return {p.stem for p in paths}


def test_unsafe_copies_are_listed_counted_and_gone_once_sent_again(
    tmp_path, modality, instances, monkeypatch
):
    # fsync, not syncfs: the disk's answer is patched into fsync_path, failing from before the
    # C-STOREs on, so that the background durability round cannot make them durable first.
    config = {"remotes": (remote("MODALITY", modality.listen()),), "durability": "fsync"}
    with scp_with_http(tmp_path / "scp", **config) as (scp, web):
        client = Client(web.port)
        lost, kept = instances(2), instances(1)
        monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
        assert modality.store(scp.port, lost) == [0, 0]
        assert modality.commit(scp.port, refs_of(lost), "1.2.3.40") == 0
        assert modality.wait_report(REPORT_WAIT)
        assert report_content(modality.reports[0][1]) == (
            set(),
            dict.fromkeys(_stems(lost), PROCESSING_FAILURE),
        )
        monkeypatch.undo()  # storage is back
        assert modality.store(scp.port, kept) == [0]
        assert modality.commit(scp.port, refs_of(kept), "1.2.3.41") == 0
        assert modality.wait_report(REPORT_WAIT, count=2)
        assert report_content(modality.reports[1][1]) == (_stems(kept), {})

        unsafe = client.ok("/api/v1/instances?unsafe=true")
        assert unsafe["total"] == 2
        assert {i["sop_instance_uid"] for i in unsafe["items"]} == _stems(lost)
        assert all(i["unsafe"] is True and i["durable"] is False for i in unsafe["items"])
        safe = client.ok("/api/v1/instances?unsafe=false")["items"]
        assert [i["sop_instance_uid"] for i in safe] == [kept[0].stem]
        assert safe[0]["unsafe"] is False and safe[0]["durable"] is True  # JSON booleans
        every = client.ok("/api/v1/instances")["items"]
        assert {i["sop_instance_uid"]: i["unsafe"] for i in every} == {
            lost[0].stem: True,
            lost[1].stem: True,
            kept[0].stem: False,
        }
        status = client.ok("/api/v1/status")
        assert (status["instances"], status["instances_durable"]) == (3, 1)
        assert status["instances_unsafe"] == 2
        assert _unsafe_gauge(web.port) == 2

        data_dir = scp.config.data_dir
        assert json.loads(_stgcmt_status(data_dir, "--json"))["instances_unsafe"] == 2
        text = _stgcmt_status(data_dir)
        assert "instances  3 (1 durable, 2 unsafe)" in text
        assert (
            "2 copies unsafe after a failed sync: have the modality send them again"
            " (GET /api/v1/instances?unsafe=true lists them)"
        ) in text

        assert modality.store(scp.port, lost) == [0, 0]  # the same files, as the advice says
        gone = wait_for(
            lambda: client.ok("/api/v1/instances?unsafe=true")["total"] == 0, REPORT_WAIT
        )
        assert gone, "the copies sent again are still listed unsafe"
        assert _unsafe_gauge(web.port) == 0
        assert "after a failed sync" not in _stgcmt_status(data_dir)
        assert modality.commit(scp.port, refs_of(lost), "1.2.3.42") == 0
        assert modality.wait_report(REPORT_WAIT, count=3)
        assert report_content(modality.reports[2][1]) == (_stems(lost), {})

