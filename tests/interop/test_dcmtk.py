"""DCMTK (Debian package ``dcmtk``) against our SCP, and our SCU side against ``storescp``.

``storescu``/``echoscu`` are independent C-STORE/C-ECHO SCUs; ``storescp`` is a Storage SCP that
does not offer Storage Commitment, the common case of an archive that cannot commit.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from stgcmt import ul as net
from stgcmt.dicom.commitment import EVENT_TYPE_ALL_COMMITTED
from stgcmt.dicom.status import SUCCESS

from support.common import LOCALHOST, free_port, remote, wait_for, write_instances
from support.interop import (
    SCP_AET,
    SCU_AET,
    Dcmtk,
    ReportListener,
    StoreScp,
    references,
    request_commitment,
)

STORESCU_AET = "STORESCU"
MANY = 200


def test_storescu_sends_many_files_on_one_association(
    dcmtk: Dcmtk, scp_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = ReportListener("MODALITY").start()
    try:
        scp = scp_factory(
            aet=SCP_AET,
            remotes=(remote(STORESCU_AET, 104), remote("MODALITY", listener.port)),
        )
        outbox = tmp_path / "outbox"
        files = write_instances(outbox, MANY)
        caplog.set_level(logging.INFO, logger="stgcmt.scp")

        done = dcmtk.run(
            "storescu",
            *("-aet", STORESCU_AET, "-aec", SCP_AET, "+sd"),
            *(LOCALHOST, str(scp.port), str(outbox)),
        )

        assert done.returncode == 0, done.stdout + done.stderr
        assert scp.store.count() == MANY
        # one association carried them all (the SCP logs a summary when it closes)
        closed = wait_for(
            lambda: [r.getMessage() for r in caplog.records if "closed:" in r.getMessage()], 5
        )
        assert closed is not None and len(closed) == 1
        assert closed[0].startswith(f"association from {STORESCU_AET}@")
        assert closed[0].endswith(f"{MANY} stored")

        # and a commitment for all of them, asked by another (pynetdicom) AE, commits all
        refs = references(files)
        transaction_uid, status = request_commitment("MODALITY", remote(SCP_AET, scp.port), refs)
        assert status == SUCCESS
        received = listener.wait_for(transaction_uid, 30)
        assert received is not None
        assert received.event_type_id == EVENT_TYPE_ALL_COMMITTED
        assert len(received.report.committed) == MANY and received.report.failed == []
    finally:
        listener.stop()


def test_echoscu(dcmtk: Dcmtk, scp_factory) -> None:
    scp = scp_factory(aet=SCP_AET, remotes=(remote(STORESCU_AET, 104),))
    port = str(scp.port)

    known = dcmtk.run("echoscu", "-aet", STORESCU_AET, "-aec", SCP_AET, LOCALHOST, port)
    stranger = dcmtk.run("echoscu", "-aet", "STRANGER", "-aec", SCP_AET, LOCALHOST, port)
    misdirected = dcmtk.run("echoscu", "-aet", STORESCU_AET, "-aec", "OTHER", LOCALHOST, port)

    assert known.returncode == 0, known.stdout + known.stderr
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stdout + stranger.stderr
    assert misdirected.returncode != 0
    assert "Called AE Title Not Recognized" in misdirected.stdout + misdirected.stderr


def test_our_c_store_to_storescp(storescp: StoreScp, tmp_path: Path) -> None:
    """C-STORE through our networking seam (what ``stgcmt send`` uses) into storescp."""
    files = write_instances(tmp_path / "outbox", 3)
    refs = references(files)
    plan = net.ContextPlan(
        storage=sorted({(r.sop_class_uid, ExplicitVRLittleEndian) for r in refs})
    )

    with net.open_association(SCU_AET, remote(storescp.aet, storescp.port), plan) as association:
        statuses = [association.c_store(f) for f in files]

    assert statuses == [SUCCESS] * 3
    received = wait_for(lambda: len(storescp.received()) == 3 and storescp.received(), 5)
    assert received, "storescp did not write the files"
    assert {p.name.split(".", 1)[1] for p in received} == {r.sop_instance_uid for r in refs}


def test_storescp_refuses_commitment_context(storescp: StoreScp) -> None:
    """An N-ACTION cannot even be attempted: the peer rejects the presentation context, and
    the error says so (storage contexts on the same association are accepted)."""
    plan = net.ContextPlan(
        storage=[("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian)], commitment="scu"
    )
    with pytest.raises(net.AssociationError) as caught:
        net.open_association(SCU_AET, remote(storescp.aet, storescp.port), plan)
    message = str(caught.value)
    assert "does not support Storage Commitment" in message
    assert "presentation context rejected" in message


def test_stgcmt_send_to_storescp_fails_cleanly(storescp: StoreScp, tmp_path: Path) -> None:
    files = write_instances(tmp_path / "outbox", 3)
    before = {f: f.read_bytes() for f in files}

    done = subprocess.run(
        [
            *(sys.executable, "-m", "stgcmt", "send"),
            f"{storescp.aet}@{LOCALHOST}:{storescp.port}",
            str(tmp_path / "outbox"),
            *("--aet", SCU_AET, "--listen", str(free_port()), "--listen-bind", LOCALHOST),
            *("--report-assoc", "new", "--delete-committed", "--timeout", "10"),
            *("--journal", str(tmp_path / "scu.sqlite")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    output = done.stdout + done.stderr
    # C-STORE works, the commitment step fails: exit 1 (not committed), every file kept
    assert done.returncode == 1, output
    assert "does not support Storage Commitment" in output
    assert "rejected the Storage Commitment Push Model" in output
    assert {f: f.read_bytes() for f in files if f.exists()} == before, "a local file was lost"
    assert all(f.exists() for f in files)
    assert len(wait_for(lambda: len(storescp.received()) == 3 and storescp.received(), 5)) == 3
