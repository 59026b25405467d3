"""The SCP end to end, with a plain pynetdicom modality as the peer."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from stgcmt.config import RetryPolicy
from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.status import (
    CLASS_INSTANCE_CONFLICT,
    DUPLICATE_TRANSACTION_UID,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
)
from stgcmt.storage.queries import SqliteScpQueries

from support.common import CT_IMAGE, SECONDARY_CAPTURE, free_port, remote, wait_for
from support.pynetdicom_peer import Modality, refs_of, report_content

REPORT_WAIT = 15


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


def known(modality: Modality, port: int):
    return (remote(modality.aet, port),)


def test_store_and_commit_report_on_new_association(scp_factory, modality, instances):
    listen = modality.listen()
    scp = scp_factory(remotes=known(modality, listen))
    paths = instances(3)
    assert modality.store(scp.port, paths) == [0, 0, 0]

    refs = refs_of(paths)
    missing = Reference(SECONDARY_CAPTURE, generate_uid())
    assert modality.commit(scp.port, [*refs, missing], "1.2.3.100") == 0
    assert modality.wait_report(REPORT_WAIT)

    event_type, information, how = modality.reports[0]
    committed, failed = report_content(information)
    assert how == "new"
    assert event_type == 2
    assert committed == {r.sop_instance_uid for r in refs}
    assert failed == {missing.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE}
    assert information.TransactionUID == "1.2.3.100"
    assert information.RetrieveAETitle == "STGCMT_SCP"
    tx = scp.wait_delivered("1.2.3.100", 5)
    assert tx.delivered_via.startswith("a new association")


def test_committed_instances_are_durable_and_intact(scp_factory, modality, instances):
    scp = scp_factory(remotes=known(modality, modality.listen()))
    paths = instances(2)
    modality.store(scp.port, paths)
    modality.commit(scp.port, refs_of(paths), "1.2.3.101")
    assert modality.wait_report(REPORT_WAIT)
    rows = SqliteScpQueries(scp.config.data_dir).instances()
    assert len(rows) == 2 and all(row["durable"] == 1 for row in rows)
    by_uid = {row["sop_instance_uid"]: row for row in rows}
    for path in paths:  # the archived file carries the whole data set exactly as sent
        stored = scp.store.path_for(path.stem)
        assert _dataset_bytes(stored) == _dataset_bytes(path)
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == by_uid[path.stem]["sha256"]
        assert dcmread(stored) == dcmread(path)


def _dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information (group 0002, always Explicit VR LE)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    offset = 132
    while int.from_bytes(data[offset : offset + 2], "little") == 0x0002:
        vr = data[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            offset += 12 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6 : offset + 8], "little")
    return data[offset:]


def test_report_on_same_association(scp_factory, modality, instances):
    scp = scp_factory(remotes=known(modality, free_port()), report_assoc="same")
    paths = instances(2)
    modality.store(scp.port, paths)
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.102", wait_same=REPORT_WAIT) == 0
    event_type, information, how = modality.reports[0]
    assert (event_type, how) == (1, "same")
    assert report_content(information)[0] == {p.stem for p in paths}


def test_auto_uses_requesting_association_while_open(scp_factory, modality, instances):
    scp = scp_factory(remotes=known(modality, modality.listen()), report_assoc="auto")
    paths = instances(1)
    modality.store(scp.port, paths)
    modality.commit(scp.port, refs_of(paths), "1.2.3.103", wait_same=REPORT_WAIT)
    assert [how for _, _, how in modality.reports] == ["same"]


def test_auto_falls_back_to_new_association(scp_factory, modality, instances):
    scp = scp_factory(remotes=known(modality, modality.listen()), report_assoc="auto")
    paths = instances(1)
    modality.store(scp.port, paths)
    modality.commit(scp.port, refs_of(paths), "1.2.3.104")  # releases at once
    assert modality.wait_report(REPORT_WAIT)
    assert len(modality.reports) == 1  # exactly one report
    assert modality.reports[0][2] == "new"  # on a new association: the requester had gone
    tx = scp.wait_delivered("1.2.3.104", 5)
    assert tx is not None and tx.delivered_via.startswith("a new association")


def test_failure_reasons(scp_factory, modality, instances):
    scp = scp_factory(remotes=known(modality, modality.listen()))
    stored = instances(3)
    modality.store(scp.port, stored)
    sc_ref, corrupt_ref, other = refs_of(stored)
    # Corrupt one stored file behind the archive's back: checksum verification must catch it.
    archived = scp.store.path_for(corrupt_ref.sop_instance_uid)
    archived.write_bytes(archived.read_bytes()[:-10] + b"corrupted!")
    refs = [
        sc_ref,
        Reference(CT_IMAGE, other.sop_instance_uid),  # stored as Secondary Capture
        Reference("1.2.3.4.5", generate_uid()),  # not a storage SOP class
        corrupt_ref,
    ]
    modality.commit(scp.port, refs, "1.2.3.105")
    assert modality.wait_report(REPORT_WAIT)
    committed, failed = report_content(modality.reports[0][1])
    assert committed == {sc_ref.sop_instance_uid}
    assert failed == {
        other.sop_instance_uid: CLASS_INSTANCE_CONFLICT,
        refs[2].sop_instance_uid: SOP_CLASS_NOT_SUPPORTED,
        corrupt_ref.sop_instance_uid: PROCESSING_FAILURE,
    }


def test_same_instance_uid_with_other_class_is_recorded_as_conflict(
    scp_factory, modality, instances
):
    scp = scp_factory(remotes=known(modality, modality.listen()))
    [path] = instances(1)
    modality.store(scp.port, [path])
    twin = instances(1, sop_class=CT_IMAGE)[0]

    ds = dcmread(twin)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = path.stem
    ds.save_as(twin)
    assert modality.store(scp.port, [twin]) == [0]
    conflicts = SqliteScpQueries(scp.config.data_dir).class_conflicts()
    assert [row["sop_class_uid"] for row in conflicts] == [CT_IMAGE]
    modality.commit(scp.port, [Reference(CT_IMAGE, path.stem)], "1.2.3.106")
    assert modality.wait_report(REPORT_WAIT)
    assert report_content(modality.reports[0][1])[1] == {path.stem: CLASS_INSTANCE_CONFLICT}


def test_duplicate_active_transaction_uid_fails_with_0131(scp_factory, modality, instances):
    # Reports cannot be delivered yet (listener down), so the first stays active.
    listen = free_port()
    scp = scp_factory(remotes=known(modality, listen))
    paths = instances(1)
    modality.store(scp.port, paths)
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.107") == 0
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.107") == 0
    modality.listen(listen)
    assert modality.wait_report(REPORT_WAIT, count=2)
    outcomes = sorted(
        report_content(info)[1].get(paths[0].stem, 0) for _, info, _ in modality.reports
    )
    assert outcomes == [0, DUPLICATE_TRANSACTION_UID]


def test_report_target_down_then_up(scp_factory, modality, instances):
    listen = free_port()
    scp = scp_factory(remotes=known(modality, listen))
    paths = instances(1)
    modality.store(scp.port, paths)
    modality.commit(scp.port, refs_of(paths), "1.2.3.108")

    def failed_attempts():
        rows = SqliteScpQueries(scp.config.data_dir).transactions()
        return rows and rows[0]["attempts"] >= 2 and rows[0]

    row = wait_for(failed_attempts, 10)
    assert row and "cannot connect" in row["last_error"]
    modality.listen(listen)
    assert modality.wait_report(REPORT_WAIT)
    tx = scp.wait_delivered("1.2.3.108", 5)
    assert tx is not None and tx.state == "delivered" and tx.attempts >= 3


def test_undeliverable_report_is_given_up_after_configured_age(scp_factory, modality, instances):
    retry = RetryPolicy(start=0.1, cap=0.2, give_up_after=1.0)
    scp = scp_factory(remotes=known(modality, free_port()), retry=retry)
    paths = instances(1)
    modality.store(scp.port, paths)
    modality.commit(scp.port, refs_of(paths), "1.2.3.109")
    tx = scp.wait_delivered("1.2.3.109", 10)
    assert tx is not None and tx.state == "given_up"
    assert "gave up" in tx.last_error
    # It kept trying for the configured second (0.1, 0.2, 0.2 ... s apart), not just once.
    assert tx.attempts >= 4, tx.attempts
    assert time.time() - tx.received_at >= 1.0


def test_unknown_calling_ae_is_rejected(scp_factory, instances):
    scp = scp_factory()
    stranger = Modality("STRANGER")
    assoc = stranger.associate(scp.port)
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x03  # calling AE title not recognised


def test_wrong_called_ae_is_rejected(scp_factory, modality):
    scp = scp_factory(remotes=known(modality, free_port()))
    assoc = modality.associate(scp.port, called="SOMEONE_ELSE")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x07


def test_accept_unknown_reports_on_same_association(scp_factory, instances):
    scp = scp_factory(accept_unknown=True)  # default report_assoc "new", but no address
    stranger = Modality("STRANGER")
    paths = instances(1)
    assert stranger.store(scp.port, paths) == [0]
    assert stranger.commit(scp.port, refs_of(paths), "1.2.3.110", wait_same=REPORT_WAIT) == 0
    assert [how for _, _, how in stranger.reports] == ["same"]


def test_same_mode_waits_for_the_next_association(scp_factory, modality, instances):
    """Requester released before the report: it goes on the AE's next association."""
    scp = scp_factory(accept_unknown=True)
    paths = instances(1)
    modality.store(scp.port, paths)
    modality.commit(scp.port, refs_of(paths), "1.2.3.111")  # released at once
    wait_for(lambda: scp.journal.in_state("report_pending"), 5)
    modality.commit(scp.port, refs_of(paths), "1.2.3.112", wait_same=REPORT_WAIT, reports=2)
    assert len(modality.reports) == 2
    assert {info.TransactionUID for _, info, _ in modality.reports} == {"1.2.3.111", "1.2.3.112"}


MALFORMED = {
    "no Transaction UID": (lambda ds: delattr(ds, "TransactionUID"), 0x0115),
    "Transaction UID not a UID": (lambda ds: setattr(ds, "TransactionUID", "1.02.x"), 0x0115),
    "no Referenced SOP Sequence": (lambda ds: delattr(ds, "ReferencedSOPSequence"), 0x0115),
    "empty Referenced SOP Sequence": (
        lambda ds: setattr(ds, "ReferencedSOPSequence", []),
        0x0115,
    ),
    "item without instance UID": (
        lambda ds: delattr(ds.ReferencedSOPSequence[0], "ReferencedSOPInstanceUID"),
        0x0115,
    ),
    "item without class UID": (
        lambda ds: delattr(ds.ReferencedSOPSequence[0], "ReferencedSOPClassUID"),
        0x0115,
    ),
}


def _valid_information() -> Dataset:
    from stgcmt.dicom.commitment import CommitmentRequest, build_action_information

    return build_action_information(
        CommitmentRequest("1.2.3.200", [Reference(SECONDARY_CAPTURE, "1.2.3.201")])
    )


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_n_action_gets_its_status(scp_factory, modality, case):
    scp = scp_factory(remotes=known(modality, free_port()))
    mutate, expected = MALFORMED[case]
    information = _valid_information()
    mutate(information)
    assert modality.n_action(scp.port, information) == expected
    assert scp.journal.in_state("received", "verifying", "report_pending") == []
    assert modality.n_action(scp.port, _valid_information()) == 0  # still serving


def test_wrong_action_type_and_instance(scp_factory, modality):
    scp = scp_factory(remotes=known(modality, free_port()))
    assert modality.n_action(scp.port, _valid_information(), action_type=2) == 0x0123
    assert modality.n_action(scp.port, _valid_information(), instance_uid="1.2.3") == 0x0117
    assert modality.n_action(scp.port, None) == 0x0115


def test_oversized_request_gets_resource_limitation(scp_factory, modality):
    scp = scp_factory(remotes=known(modality, free_port()), max_references=10)
    information = _valid_information()
    information.ReferencedSOPSequence = list(information.ReferencedSOPSequence) * 11
    assert modality.n_action(scp.port, information) == 0x0213


def test_repeated_instance_keeps_first_copy(scp_factory, modality, instances, tmp_path: Path):
    scp = scp_factory(remotes=known(modality, free_port()))
    [path] = instances(1)
    modality.store(scp.port, [path])
    first = scp.store.path_for(path.stem).read_bytes()

    ds = dcmread(path)
    ds.PatientID = "CHANGED"
    ds.save_as(path)
    assert modality.store(scp.port, [path]) == [0]
    assert scp.store.path_for(path.stem).read_bytes() == first
    assert scp.store.count() == 1
