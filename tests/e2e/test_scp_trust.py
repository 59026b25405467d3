"""Trust boundary on the archive side: no peer input may overwrite, delete, exhaust or hang.

A plain pynetdicom association plays the hostile peer; where pynetdicom's own C-STORE would not
send what we need (a command UID that differs from the data set's, an invalid UID), the DIMSE
primitive is built by hand and sent on the context we choose.
"""

from __future__ import annotations

import hashlib
import os
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse_primitives import C_STORE, N_ACTION
from pynetdicom.dsutils import encode

from stgcmt.config import RetryPolicy
from stgcmt.dicom.commitment import CommitmentRequest, Reference, build_action_information
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE
from stgcmt.dicom.uids import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.interfaces import InstanceRow
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.ul import STORAGE_SOP_CLASSES

from support.common import (
    CT_IMAGE,
    LOCALHOST,
    SECONDARY_CAPTURE,
    free_port,
    make_dataset,
    remote,
    wait_for,
)
from support.mounts import fill_up
from support.pynetdicom_peer import Modality, refs_of, report_content

REPORT_WAIT = 15
CANNOT_UNDERSTAND, DOES_NOT_MATCH, NOT_SUPPORTED = 0xC000, 0xA900, 0x0122


@pytest.fixture(autouse=True)
def lenient_peer(monkeypatch):
    """The hostile peer must be able to read responses echoing the UIDs it sent: pynetdicom
    refuses a C-STORE-RSP whose Affected SOP Instance UID is longer than 64 characters."""
    monkeypatch.setitem(_config.VALIDATORS, "UI", lambda value: (True, ""))


def _encoded(ds: Dataset) -> bytes:
    """The data set as a C-STORE carries it: explicit VR little endian, no File Meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _hostile(port: int):
    """An association offering two storage classes, Verification and commitment, each with
    Explicit VR Little Endian only (the encoding :func:`_encoded` produces)."""
    ae = AE("MODALITY")
    ae.dimse_timeout = 10
    for uid in (SECONDARY_CAPTURE, CT_IMAGE, VERIFICATION):
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL, ImplicitVRLittleEndian)
    assoc = ae.associate(LOCALHOST, port, ae_title="STGCMT_SCP")
    assert assoc.is_established
    return assoc


def _context_id(assoc, abstract_syntax: str) -> int:
    return next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax
    )


def _raw_c_store(
    assoc, context: str, command_class: str, command_instance: str, ds: Dataset
) -> int:
    """A C-STORE with exactly these command UIDs (no validation, empty means absent)."""
    request = C_STORE()
    request.MessageID = 1
    request.Priority = 2
    request._affected_sop_class_uid = UID(command_class) if command_class else None
    request._affected_sop_instance_uid = UID(command_instance) if command_instance else None
    request.DataSet = BytesIO(_encoded(ds))
    response = _exchange(assoc, request, context)
    assert response is not None, "no C-STORE response"
    return int(response.Status)


def _exchange(assoc, request, context: str):
    """Send a primitive we built on the context for ``context``, and wait for its response,
    pausing pynetdicom's reactor as its own send_* methods do (it would take the response)."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, _context_id(assoc, context))
        return assoc.dimse.get_msg(block=True)[1]
    finally:
        assoc._reactor_checkpoint.set()


def _dataset(sop_class: str = SECONDARY_CAPTURE, uid: str | None = None) -> Dataset:
    ds = make_dataset(sop_class)
    if uid is not None:
        ds.SOPInstanceUID = uid
    return ds


def _committed_instance(scp, modality: Modality, tmp_path: Path) -> tuple[Path, str]:
    """Store one instance, have it committed; returns (its file in the store, SHA-256)."""
    ds = make_dataset()
    source = tmp_path / "outbox" / "committed.dcm"
    source.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(source, enforce_file_format=True)
    assert modality.store(scp.port, [source]) == [0]
    assert modality.commit(scp.port, refs_of([source]), "1.2.3.900") == 0
    assert modality.wait_report(REPORT_WAIT)
    assert report_content(modality.reports[-1][1])[0] == {ds.SOPInstanceUID}
    row = SqliteScpQueries(scp.config.data_dir).instance(ds.SOPInstanceUID)
    assert row is not None
    stored = scp.config.data_dir / row["path"]
    return stored, hashlib.sha256(stored.read_bytes()).hexdigest()


def test_path_traversal_uids_refused_and_committed_file_untouched(scp_factory, tmp_path):
    modality = Modality("MODALITY")
    try:
        scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
        stored, digest = _committed_instance(scp, modality, tmp_path)
        uid = dcmread(stored).SOPInstanceUID
        absolute = f"/tmp/stgcmt-trust-{os.getpid()}-{time.monotonic_ns()}"
        old_dir = hashlib.sha1(uid.encode()).hexdigest()[:2]  # pre-hash-name fan-out
        hostile = [
            "../../../x",
            f"../{old_dir}/{uid}",
            f"../{stored.parent.name}/{stored.stem}",
            absolute,
        ]
        assoc = _hostile(scp.port)
        try:
            statuses = [
                _raw_c_store(assoc, SECONDARY_CAPTURE, SECONDARY_CAPTURE, h, _dataset(uid=h))
                for h in hostile
            ]
        finally:
            assoc.release()
        assert statuses == [CANNOT_UNDERSTAND] * len(hostile)
        assert not Path(absolute + ".dcm").exists() and not Path(absolute).exists()
        outside = [
            p
            for p in tmp_path.rglob("*")
            if p.is_file() and not p.is_relative_to(scp.config.data_dir / "instances")
        ]
        assert all(p.suffix != ".dcm" or p.parent.name == "outbox" for p in outside), outside
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
        assert scp.store.count() == 1
        source = tmp_path / "outbox" / "committed.dcm"
        assert modality.commit(scp.port, refs_of([source]), "1.2.3.901") == 0
        assert modality.wait_report(REPORT_WAIT, count=2)
        assert report_content(modality.reports[-1][1]) == ({uid}, {})
    finally:
        modality.stop()


def test_identity_mismatches_refused_with_a900(scp_factory, caplog):
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),))
    other = generate_uid()
    assoc = _hostile(scp.port)
    try:
        instance_differs = _raw_c_store(
            assoc, SECONDARY_CAPTURE, SECONDARY_CAPTURE, generate_uid(), _dataset(uid=other)
        )
        ds = _dataset(CT_IMAGE)
        class_differs = _raw_c_store(
            assoc, SECONDARY_CAPTURE, SECONDARY_CAPTURE, ds.SOPInstanceUID, ds
        )
        ds = _dataset(CT_IMAGE)
        context_differs = _raw_c_store(assoc, SECONDARY_CAPTURE, CT_IMAGE, ds.SOPInstanceUID, ds)
    finally:
        assoc.release()
    assert (instance_differs, class_differs, context_differs) == (DOES_NOT_MATCH,) * 3
    assert scp.store.count() == 0
    refusals = [r for r in caplog.records if "refused with 0xA900" in r.getMessage()]
    assert len(refusals) == 3
    assert all("MODALITY@127.0.0.1:" in r.getMessage() for r in refusals)


def test_invalid_uids_refused_with_c000(scp_factory, caplog):
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),))
    assoc = _hostile(scp.port)
    try:
        statuses = [
            _raw_c_store(assoc, SECONDARY_CAPTURE, SECONDARY_CAPTURE, uid, _dataset(uid=uid))
            for uid in ("1" * 65, "", "1.2.abc", "1.02.3")
        ]
        no_uid = _dataset()
        command_uid = no_uid.SOPInstanceUID
        del no_uid.SOPInstanceUID
        statuses.append(
            _raw_c_store(assoc, SECONDARY_CAPTURE, SECONDARY_CAPTURE, command_uid, no_uid)
        )
    finally:
        assoc.release()
    assert statuses == [CANNOT_UNDERSTAND] * 5
    assert scp.store.count() == 0
    assert "'1111111111111111111111111111" in caplog.text  # the UID is named, as repr


def test_non_storage_class_refused_with_0122(scp_factory):
    """Verification is the one non-storage context we accept: a C-STORE on it, with a
    matching class and data set, is refused as not supported."""
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),))
    ds = _dataset(VERIFICATION)
    assoc = _hostile(scp.port)
    try:
        status = _raw_c_store(assoc, VERIFICATION, VERIFICATION, ds.SOPInstanceUID, ds)
    finally:
        assoc.release()
    assert status == NOT_SUPPORTED
    assert scp.store.count() == 0


def test_n_action_for_another_sop_class_refused_with_0118(scp_factory, instances, caplog):
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),))
    paths = instances(1)
    information = build_action_information(CommitmentRequest("1.2.3.910", refs_of(paths)))
    assoc = _hostile(scp.port)
    try:
        request = N_ACTION()
        request.MessageID = 1
        request.RequestedSOPClassUID = VERIFICATION
        request.RequestedSOPInstanceUID = STORAGE_COMMITMENT_INSTANCE
        request.ActionTypeID = 1
        request.ActionInformation = BytesIO(encode(information, True, True))
        response = _exchange(assoc, request, STORAGE_COMMITMENT_PUSH_MODEL)
    finally:
        assoc.release()
    assert response is not None and int(response.Status) == 0x0118
    assert SqliteScpQueries(scp.config.data_dir).transactions() == []
    assert "is not Storage Commitment Push Model" in caplog.text


def test_index_rows_outside_the_store_are_never_used(scp_factory, tmp_path, caplog):
    """Rows written straight into index.sqlite, each pointing at a real file outside the
    store with the right size and SHA-256: without the check, they would be committed."""
    data_dir = tmp_path / "scp-data"
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"not an archive file" * 10)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    rows = {
        "1.2.3.920": ("../outside.dcm", 1),
        "1.2.3.921": (str(outside), 0),
        "1.2.3.922": ("instances/ab/../../../outside.dcm", 0),
    }
    seed = InstanceStore(data_dir, supported_classes=STORAGE_SOP_CLASSES)
    for uid, (path, durable) in rows.items():
        seed.index.put(
            InstanceRow(
                uid,
                SECONDARY_CAPTURE,
                None,
                None,
                None,
                ExplicitVRLittleEndian,
                path,
                outside.stat().st_size,
                digest,
                None,
                time.time(),
                bool(durable),
            )
        )
    seed.close()

    modality = Modality("MODALITY")
    try:
        scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
        refs = [Reference(SECONDARY_CAPTURE, uid) for uid in rows]
        assert modality.commit(scp.port, refs, "1.2.3.923") == 0
        assert modality.wait_report(REPORT_WAIT)
        committed, failed = report_content(modality.reports[0][1])
    finally:
        modality.stop()
    assert committed == set()
    assert failed == dict.fromkeys(rows, NO_SUCH_OBJECT_INSTANCE)
    assert outside.exists() and hashlib.sha256(outside.read_bytes()).hexdigest() == digest
    assert "points outside the store" in caplog.text


# -- a journal that cannot record: no report storm ----------------------------------------------


def test_report_not_stormed_when_journal_cannot_record(scp_factory, tmp_path, small_disk, caplog):
    port = free_port()
    modality = Modality("MODALITY")
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", port),),
            data_dir=small_disk / "data",
            retry=RetryPolicy(start=1.0, cap=2.0, give_up_after=3600),
        )
        [path] = modality_paths = [tmp_path / "one.dcm"]
        make_dataset().save_as(path, enforce_file_format=True)
        assert modality.store(scp.port, modality_paths) == [0]
        # Journaled while the disk has room; the first delivery fails (nobody listens yet).
        assert modality.commit(scp.port, refs_of(modality_paths), "1.2.3.930") == 0
        assert wait_for(lambda: scp.journal.get(1).attempts >= 1, 10)
        fill_up(small_disk / "filler")
        modality.listen(port)
        assert modality.wait_report(10)
        time.sleep(4.0)  # retry schedule 1, 2, 2 s: a storm would deliver thousands here
        during_outage = len(modality.reports)
        assert scp.journal.get(1).state == "report_pending", "the disk did not fill up"
        (small_disk / "filler").unlink()
        tx = scp.wait_delivered("1.2.3.930", 10)
        assert tx is not None and tx.state == "delivered"
        total = len(modality.reports)
    finally:
        modality.stop()
    assert during_outage == 1
    assert total <= 2
    outage_lines = [r for r in caplog.records if "cannot record deliveries" in r.getMessage()]
    assert len(outage_lines) == 1
