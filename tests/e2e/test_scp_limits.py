"""Association-level policy, a full disk, and DICOM TLS on the SCP."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from stgcmt.config import RemoteAE, TlsConfig
from stgcmt.dicom.commitment import CommitmentRequest, build_action_information
from stgcmt.dicom.status import RESOURCE_LIMITATION
from stgcmt.dicom.uids import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.storage.queries import SqliteScpQueries

from support.common import LOCALHOST, SECONDARY_CAPTURE, free_port, remote, write_instances
from support.mounts import tmpfs
from support.pynetdicom_peer import Modality, refs_of, report_content
from support.tls_certs import CertificateAuthority
from support.tls_peer import tls_report_listener

REPORT_WAIT = 15


def test_too_many_associations_rejected_transient(scp_factory):
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),), max_associations=2)
    modality = Modality("MODALITY")
    held = [modality.associate(scp.port) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = modality.associate(scp.port)
        assert third.is_rejected
        primitive = third.acceptor.primitive
        assert (primitive.result, primitive.result_source, primitive.diagnostic) == (2, 3, 2)
    finally:
        for assoc in held:
            assoc.release()


def test_known_ae_from_wrong_host_is_rejected(scp_factory, caplog):
    scp = scp_factory(remotes=(RemoteAE("MODALITY", "127.0.0.2", 104),))
    assoc = Modality("MODALITY").associate(scp.port)
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x03
    assert "configured at 127.0.0.2, not 127.0.0.1" in caplog.text


def _store_until_refused(scp, modality, paths) -> tuple[list[Path], list[Path]]:
    statuses = modality.store(scp.port, paths)
    stored = [p for p, s in zip(paths, statuses, strict=True) if s == 0]
    refused = [p for p, s in zip(paths, statuses, strict=True) if s != 0]
    assert all(0xA700 <= s <= 0xA7FF for s in statuses if s != 0)
    return stored, refused


def _commit_after_full(scp, modality, stored, refused):
    modality.commit(scp.port, refs_of(stored + refused), "1.2.3.500")
    assert modality.wait_report(REPORT_WAIT)
    committed, failed = report_content(modality.reports[0][1])
    assert committed == {p.stem for p in stored}
    assert failed == {p.stem: RESOURCE_LIMITATION for p in refused}
    for path in stored:  # what was stored before the disk filled is intact
        kept = dcmread(scp.store.path_for(path.stem))
        assert kept.SOPInstanceUID == path.stem
    assert SqliteScpQueries(scp.config.data_dir).integrity_problems() == []


def test_store_quota_gives_out_of_resources_and_0213(scp_factory, tmp_path):
    modality = Modality("MODALITY")
    try:
        scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),), max_store_bytes=200_000)
        paths = write_instances(tmp_path / "big", 5, pixel_bytes=60_000)
        stored, refused = _store_until_refused(scp, modality, paths)
        assert len(stored) == 3 and len(refused) == 2
        _commit_after_full(scp, modality, stored, refused)
    finally:
        modality.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: a real 'No space left on device'."""
    with tmpfs(tmp_path / "small-disk", "3m") as mount_point:
        yield mount_point


def test_disk_full_gives_out_of_resources_and_0213(scp_factory, tmp_path, small_disk):
    modality = Modality("MODALITY")
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", modality.listen()),), data_dir=small_disk / "data"
        )
        paths = write_instances(tmp_path / "big", 8, pixel_bytes=500_000)
        stored, refused = _store_until_refused(scp, modality, paths)
        assert stored and refused
        _commit_after_full(scp, modality, stored, refused)
    finally:
        modality.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("archive"), ca.issue("modality")


def _client_context(ca: CertificateAuthority, client=None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _tls_assoc(port: int, ca: CertificateAuthority, client=None):
    ae = AE("MODALITY")
    for uid in (SECONDARY_CAPTURE, VERIFICATION, STORAGE_COMMITMENT_PUSH_MODEL):
        ae.add_requested_context(uid)
    return ae.associate(
        LOCALHOST, port, ae_title="STGCMT_SCP", tls_args=(_client_context(ca, client), None)
    )


def test_tls_store_and_mutual_authentication(scp_factory, pki, instances):
    ca, archive, modality_creds = pki
    tls = TlsConfig(archive.cert, archive.key, ca.cert, require_client_cert=True)
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),), tls=tls)

    assoc = _tls_assoc(scp.port, ca, modality_creds)
    assert assoc.is_established
    [path] = instances(1)
    assert assoc.send_c_store(dcmread(path)).Status == 0
    assoc.release()
    assert scp.store.count() == 1

    without_cert = _tls_assoc(scp.port, ca)
    assert not without_cert.is_established  # handshake refused: no client certificate

    plain = Modality("MODALITY").associate(scp.port)
    assert not plain.is_established  # plain TCP to a TLS port


def test_tls_report_on_new_association(scp_factory, pki, instances):
    """The SCP's own outgoing association (the report) uses TLS too."""
    ca, archive, modality_creds = pki
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(modality_creds.cert), str(modality_creds.key))
    server_context.load_verify_locations(str(ca.cert))
    server_context.verify_mode = ssl.CERT_REQUIRED
    modality = Modality("MODALITY")
    listener = tls_report_listener(modality, server_context)
    try:
        tls = TlsConfig(archive.cert, archive.key, ca.cert)
        scp = scp_factory(remotes=(remote("MODALITY", listener.server_address[1]),), tls=tls)
        [path] = instances(1)
        assoc = _tls_assoc(scp.port, ca, modality_creds)
        assoc.send_c_store(dcmread(path))
        information = build_action_information(CommitmentRequest("1.2.3.501", refs_of([path])))
        status, _ = assoc.send_n_action(
            information, 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
        )
        assoc.release()
        assert status.Status == 0
        assert modality.wait_report(REPORT_WAIT)
        assert modality.reports[0][2] == "new"
        assert report_content(modality.reports[0][1])[0] == {path.stem}
    finally:
        listener.shutdown()
