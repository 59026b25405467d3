"""Orthanc (Debian package, 1.10.x) against our SCP and our SCU, both directions.

Orthanc as Storage Commitment SCU releases the N-ACTION association as soon as it has the
response, so every report to it has to travel on a new association that our SCP opens,
asking for the SCP role. Orthanc as SCP reports on a new association to our listener.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from stgcmt import ul as net
from stgcmt.dicom.commitment import EVENT_TYPE_ALL_COMMITTED, EVENT_TYPE_FAILURES_EXIST, Reference
from stgcmt.dicom.status import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
)
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.storage.scp_journal import DELIVERED

from support.common import CT_IMAGE, LOCALHOST, wait_for, write_instances
from support.interop import (
    SCP_AET,
    SCU_AET,
    OrthancPeer,
    ReportListener,
    references,
    request_commitment,
)

REPORT_WAIT = 30.0
NOT_A_STORAGE_CLASS = "1.2.840.10008.5.1.4.1.1.999.1"


def start_scp(scp_factory, orthanc: OrthancPeer, **overrides):
    return scp_factory(
        aet=SCP_AET, port=orthanc.scp_port, remotes=(orthanc.server.remote,), **overrides
    )


def by_key(items: list[dict]) -> dict[tuple[str, str], dict]:
    return {(i["SOPClassUID"], i["SOPInstanceUID"]): i for i in items}


def keys(refs: list[Reference]) -> set[tuple[str, str]]:
    return {(r.sop_class_uid, r.sop_instance_uid) for r in refs}


# -- Orthanc as SCU -> our SCP -------------------------------------------------------------------


def test_orthanc_echoes_our_scp(orthanc: OrthancPeer, scp_factory) -> None:
    start_scp(scp_factory, orthanc)
    assert orthanc.server.post("/modalities/stgcmt-scp/echo", {}) == {}


@pytest.mark.parametrize("report_assoc", ["new", "auto"])
def test_orthanc_stores_with_commitment(
    orthanc: OrthancPeer, scp_factory, tmp_path: Path, report_assoc: str
) -> None:
    scp = start_scp(scp_factory, orthanc, report_assoc=report_assoc)
    files = write_instances(tmp_path / "out", 5)
    ids = [orthanc.server.upload(f) for f in files]

    answer = orthanc.server.post(
        "/modalities/stgcmt-scp/store",
        {"Resources": ids, "StorageCommitment": True, "Synchronous": True},
    )

    assert answer["InstancesCount"] == 5 and answer["FailedInstancesCount"] == 0
    transaction_uid = answer["StorageCommitmentTransactionUID"]
    report = orthanc.server.wait_commitment_report(transaction_uid, REPORT_WAIT)
    assert report["Status"] == "Success", report
    assert report["RemoteAET"] == SCP_AET
    assert set(by_key(report["Success"])) == keys(references(files))
    assert report["Failures"] == []

    # committed means durable in our index
    durable = sum(row["durable"] for row in SqliteScpQueries(scp.config.data_dir).instances())
    assert durable == 5
    # Orthanc released the N-ACTION association at once: the report went on a new one,
    # whatever the configured mode
    tx = scp.wait_delivered(transaction_uid, 10)
    assert tx is not None and tx.state == DELIVERED
    assert tx.calling_aet == orthanc.server.aet
    assert tx.delivered_via == f"a new association to {orthanc.server.remote}"
    assert (tx.n_committed, tx.n_failed) == (5, 0)
    if report_assoc == "new":
        assert tx.attempts == 1
    # with 'auto' a first attempt may race Orthanc's release of the requesting association and
    # fail; the retry then goes on a new association (hence no attempt count asserted)


def test_orthanc_commitment_request_with_failures(
    orthanc: OrthancPeer, scp_factory, tmp_path: Path
) -> None:
    scp = start_scp(scp_factory, orthanc)
    files = write_instances(tmp_path / "out", 2)
    ids = [orthanc.server.upload(f) for f in files]
    stored = orthanc.server.post(
        "/modalities/stgcmt-scp/store", {"Resources": ids, "Synchronous": True}
    )
    assert stored["FailedInstancesCount"] == 0 and scp.store.count() == 2
    held = references(files)
    missing = Reference(held[0].sop_class_uid, str(generate_uid()))
    conflict = Reference(CT_IMAGE, held[1].sop_instance_uid)  # we hold it as Secondary Capture
    unsupported = Reference(NOT_A_STORAGE_CLASS, str(generate_uid()))
    asked = [*held, missing, conflict, unsupported]

    answer = orthanc.server.post(
        "/modalities/stgcmt-scp/storage-commitment",
        {
            "DicomInstances": [
                {"SOPClassUID": r.sop_class_uid, "SOPInstanceUID": r.sop_instance_uid}
                for r in asked
            ]
        },
    )

    transaction_uid = answer["ID"]
    report = orthanc.server.wait_commitment_report(transaction_uid, REPORT_WAIT)
    assert report["Status"] == "Failure", report
    assert set(by_key(report["Success"])) == keys(held)
    failures = {key: item["FailureReason"] for key, item in by_key(report["Failures"]).items()}
    assert failures == {
        (missing.sop_class_uid, missing.sop_instance_uid): NO_SUCH_OBJECT_INSTANCE,  # 274
        (conflict.sop_class_uid, conflict.sop_instance_uid): CLASS_INSTANCE_CONFLICT,  # 281
        (unsupported.sop_class_uid, unsupported.sop_instance_uid): SOP_CLASS_NOT_SUPPORTED,
    }
    tx = scp.wait_delivered(transaction_uid, 10)
    assert tx is not None and tx.state == DELIVERED
    assert tx.delivered_via == f"a new association to {orthanc.server.remote}"
    assert (tx.n_committed, tx.n_failed) == (2, 3)


# -- our SCU side -> Orthanc as SCP --------------------------------------------------------------


def store_to_orthanc(orthanc: OrthancPeer, files: list[Path]) -> None:
    """C-STORE through our networking seam (what our SCU uses)."""
    refs = references(files)
    plan = net.ContextPlan(
        storage=sorted({(r.sop_class_uid, ExplicitVRLittleEndian) for r in refs})
    )
    with net.open_association(SCU_AET, orthanc.server.remote, plan) as association:
        statuses = [association.c_store(f) for f in files]
    assert statuses == [SUCCESS] * len(files)


def test_orthanc_commits_what_it_holds(
    orthanc: OrthancPeer, scu_listener: ReportListener, tmp_path: Path
) -> None:
    files = write_instances(tmp_path / "out", 4)
    store_to_orthanc(orthanc, files)
    refs = references(files)

    transaction_uid, status = request_commitment(SCU_AET, orthanc.server.remote, refs)

    assert status == SUCCESS
    received = scu_listener.wait_for(transaction_uid, REPORT_WAIT)
    assert received is not None, "no N-EVENT-REPORT from Orthanc on our listener"
    assert received.peer.calling_aet == orthanc.server.aet
    assert received.peer.called_aet == SCU_AET
    assert received.event_type_id == EVENT_TYPE_ALL_COMMITTED
    assert keys(received.report.committed) == keys(refs)
    assert received.report.failed == []


def test_orthanc_reports_missing_and_class_conflict(
    orthanc: OrthancPeer, scu_listener: ReportListener, tmp_path: Path
) -> None:
    files = write_instances(tmp_path / "out", 2)
    store_to_orthanc(orthanc, files)
    held = references(files)
    missing = Reference(held[0].sop_class_uid, str(generate_uid()))
    conflict = Reference(CT_IMAGE, held[1].sop_instance_uid)

    transaction_uid, status = request_commitment(
        SCU_AET, orthanc.server.remote, [*held, missing, conflict]
    )

    assert status == SUCCESS
    received = scu_listener.wait_for(transaction_uid, REPORT_WAIT)
    assert received is not None, "no N-EVENT-REPORT from Orthanc on our listener"
    assert received.event_type_id == EVENT_TYPE_FAILURES_EXIST
    assert keys(received.report.committed) == keys(held)
    failures = {
        (f.sop_class_uid, f.sop_instance_uid): f.failure_reason for f in received.report.failed
    }
    assert failures == {
        (missing.sop_class_uid, missing.sop_instance_uid): NO_SUCH_OBJECT_INSTANCE,
        (conflict.sop_class_uid, conflict.sop_instance_uid): CLASS_INSTANCE_CONFLICT,
    }


def test_stgcmt_send_to_orthanc(orthanc: OrthancPeer, tmp_path: Path) -> None:
    """The SCU command end to end: C-STORE, N-ACTION, report from Orthanc on a new association
    to our listener, committed files deleted."""
    files = write_instances(tmp_path / "outbox", 6)
    refs = references(files)

    done = subprocess.run(
        [
            *(sys.executable, "-m", "stgcmt", "send"),
            str(orthanc.server.remote),
            str(tmp_path / "outbox"),
            *("--aet", SCU_AET, "--listen", str(orthanc.scu_port), "--listen-bind", LOCALHOST),
            *("--report-assoc", "new", "--delete-committed", "--timeout", "30", "--json"),
            *("--journal", str(tmp_path / "scu.sqlite")),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["files_by_state"] == {"committed": 6}
    assert [tx["state"] for tx in result["transactions"]] == ["committed"]
    assert re.search(r"report from ORTHANC@\S+ on new association: 6 committed", done.stderr)
    assert not any(f.exists() for f in files), "committed files were not deleted"
    assert all(orthanc.server.lookup(r.sop_instance_uid) == ["Instance"] for r in refs)


def test_orthanc_asks_for_the_scp_role_when_reporting(orthanc: OrthancPeer, tmp_path: Path) -> None:
    """Seen with plain pynetdicom: Orthanc's report association carries an SCP/SCU Role
    Selection item (SCU role 0, SCP role 1) for the Push Model, which our listeners accept."""
    roles: list[tuple[str, bool | None, bool | None]] = []

    def on_report(event) -> tuple[int, None]:
        for item in event.assoc.requestor.primitive.user_information:
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                roles.append((str(item.sop_class_uid), item.scu_role, item.scp_role))
        return SUCCESS, None

    ae = AE(SCU_AET)
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=True, scp_role=True)
    server = ae.start_server(
        (LOCALHOST, orthanc.scu_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    try:
        files = write_instances(tmp_path / "out", 1)
        store_to_orthanc(orthanc, files)
        _, status = request_commitment(SCU_AET, orthanc.server.remote, references(files))
        assert status == SUCCESS
        assert wait_for(lambda: roles, REPORT_WAIT), "no N-EVENT-REPORT from Orthanc"
    finally:
        server.shutdown()
    assert roles == [(STORAGE_COMMITMENT_PUSH_MODEL, False, True)]
