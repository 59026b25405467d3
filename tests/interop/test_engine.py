"""The engine against implementations we did not write: DCMTK's storescu, storescp and echoscu,
and pynetdicom as requester and acceptor (both directions of N-EVENT-REPORT, with and without
role selection)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.sop_class import StorageCommitmentPushModel

from stgcmt import ul as api
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE
from stgcmt.ul.seam import ContextPlan, EventReport, Handlers, StoreRequest

from support.common import LOCALHOST, SECONDARY_CAPTURE, remote, wait_for, write_instances
from support.engine import data_set_of, information


@pytest.mark.parametrize("max_pdu", [0, 4096])
def test_storescu_into_an_engine_server(dcmtk, engine_server, tmp_path: Path, max_pdu) -> None:
    stored: list[StoreRequest] = []
    closed = threading.Event()
    handlers = Handlers(c_store=lambda r: stored.append(r) or 0, closed=lambda link: closed.set())
    server = engine_server(handlers, storage=True, max_pdu=max_pdu)
    paths = write_instances(tmp_path / "out", 20, pixel_bytes=20_000)

    done = dcmtk.run(
        "storescu", "-aet", "STORESCU", "-aec", "ENGINE", LOCALHOST, str(server.port),
        *map(str, paths),
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert closed.wait(5)
    by_uid = {r.sop_instance_uid: r for r in stored}
    assert set(by_uid) == {p.stem for p in paths}
    for path in paths:
        assert by_uid[path.stem].dataset == data_set_of(path)
        assert by_uid[path.stem].peer.calling_aet == "STORESCU"


def test_engine_c_store_into_storescp(storescp, tmp_path: Path) -> None:
    paths = write_instances(tmp_path / "out", 3) + write_instances(
        tmp_path / "big", 1, pixel_bytes=400_000
    )
    plan = ContextPlan(storage=[(SECONDARY_CAPTURE, ExplicitVRLittleEndian)], echo=True)
    with api.open_association("SCU", remote(storescp.aet, storescp.port), plan) as association:
        assert association.c_echo() == 0
        assert [association.c_store(p) for p in paths] == [0] * 4
    received = wait_for(lambda: len(storescp.received()) == 4 and storescp.received(), 5)
    assert received, "storescp did not write the files"
    written = {dcmread(p).SOPInstanceUID: p for p in received}
    for path in paths:
        assert dcmread(written[path.stem]).PixelData == dcmread(path).PixelData


def test_echoscu(dcmtk, engine_server) -> None:
    server = engine_server(Handlers(accept=lambda peer: None))
    done = dcmtk.run("echoscu", "-aet", "ECHOSCU", "-aec", "ENGINE", LOCALHOST, str(server.port))
    assert done.returncode == 0, done.stdout + done.stderr


def test_pynetdicom_requester_takes_the_scp_role_and_reports(engine_server) -> None:
    reports: list[EventReport] = []
    server = engine_server(Handlers(n_event_report=lambda link, r: reports.append(r) or 0))
    ae = AE("ARCHIVE")
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    assoc = ae.associate(LOCALHOST, server.port, ae_title="ENGINE", ext_neg=[role])
    assert assoc.is_established
    try:
        answered = [
            (item.scu_role, item.scp_role)
            for item in assoc.acceptor.primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        ]
        status, _ = assoc.send_n_event_report(
            information("1.2.3.11"), 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        assoc.release()
    assert answered == [(False, True)]
    assert status.Status == 0
    assert reports[0].report().transaction_uid == "1.2.3.11"
    assert reports[0].peer.calling_aet == "ARCHIVE"


def test_report_on_our_requesting_association_from_pynetdicom(archive_factory) -> None:
    """pynetdicom as Storage Commitment SCP answering the N-ACTION, then reporting on the
    association we opened (no role item in its answer)."""
    archive, port = archive_factory(report="same")
    reports: list[EventReport] = []
    received = threading.Event()

    def on_report(link, report: EventReport) -> int:
        reports.append(report)
        received.set()
        return 0

    plan = ContextPlan(commitment="scu")
    handlers = Handlers(n_event_report=on_report)
    with api.open_association("SCU", remote("ARCHIVE", port), plan, handlers=handlers) as a:
        assert a.n_action(information("1.2.3.12")) == 0
        assert received.wait(10)
    assert reports[0].event_type_id == 2  # the referenced instance was never stored
    assert reports[0].report().transaction_uid == "1.2.3.12"
    assert archive.wait_answers(1) == [0]


@pytest.mark.parametrize("role_item", [True, False])
def test_pynetdicom_reports_on_a_new_association(archive_factory, engine_server, role_item):
    reports: list[EventReport] = []
    listener = engine_server(Handlers(n_event_report=lambda link, r: reports.append(r) or 0))
    archive, port = archive_factory(
        report="new", report_to=("ENGINE", listener.port), role_item=role_item
    )
    with api.open_association("SCU", remote("ARCHIVE", port), ContextPlan(commitment="scu")) as a:
        assert a.n_action(information("1.2.3.13")) == 0
    assert archive.wait_answers(1) == [0]
    assert reports[0].report().transaction_uid == "1.2.3.13"


def test_report_when_the_acceptor_answers_no_role_item() -> None:
    """We ask for the SCP role; a pynetdicom acceptor without role configuration (like Orthanc)
    answers no role item, and the N-EVENT-REPORT must still go through."""
    received = []

    def on_report(event) -> tuple[int, None]:
        received.append(event.event_information)
        return 0, None

    ae = AE("LISTENER")
    ae.add_supported_context(StorageCommitmentPushModel)
    server = ae.start_server(
        (LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        target = remote("LISTENER", server.server_address[1])
        with api.open_association("SCU", target, ContextPlan(commitment="scp")) as association:
            assert association.n_event_report(1, information("1.2.3.14")) == 0
    finally:
        server.shutdown()
    assert received[0].TransactionUID == "1.2.3.14"
