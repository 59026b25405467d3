"""DICOM TLS end to end between our SCU (send, agent) and our SCP."""

from __future__ import annotations

import pytest

from stgcmt.config import TlsConfig
from stgcmt.scu.agent import Agent
from stgcmt.scu.send import EXIT_COMMITTED, EXIT_PENDING, SendOptions, send

from support.common import LOCALHOST, free_port, remote
from support.tls_certs import CertificateAuthority

SCU = "CT1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    archive, modality = ca.issue("archive"), ca.issue("modality")
    return (
        TlsConfig(archive.cert, archive.key, ca.cert, require_client_cert=True),
        TlsConfig(modality.cert, modality.key, ca.cert, require_client_cert=True),
    )


def test_send_with_report_on_new_tls_association(scp_factory, instances, scu_journal, pki):
    archive_tls, modality_tls = pki
    listen = free_port()
    scp = scp_factory(remotes=(remote(SCU, listen),), tls=archive_tls)
    paths = instances(3)
    options = SendOptions(
        aet=SCU,
        report_assoc="new",
        listen_port=listen,
        listen_bind=LOCALHOST,
        timeout=15,
        on_commit="delete",
        tls=modality_tls,
    )
    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, options)
    assert result.exit_status == EXIT_COMMITTED
    assert not any(p.exists() for p in paths)


def test_plain_send_to_tls_archive_fails_cleanly(scp_factory, instances, scu_journal, pki):
    archive_tls, _ = pki
    scp = scp_factory(remotes=(remote(SCU, free_port()),), tls=archive_tls)
    paths = instances(1)
    options = SendOptions(aet=SCU, timeout=5, on_commit="delete")
    from stgcmt.ul import AssociationError

    with pytest.raises(AssociationError):
        send(remote("STGCMT_SCP", scp.port), paths, scu_journal, options)
    assert all(p.exists() for p in paths)


def test_agent_receives_late_report_over_tls(scp_factory, instances, scu_journal, pki):
    archive_tls, modality_tls = pki
    agent_port = free_port()
    scp = scp_factory(remotes=(remote(SCU, agent_port),), tls=archive_tls, report_assoc="new")
    paths = instances(2)
    options = SendOptions(
        aet=SCU,
        report_assoc="any",
        same_assoc_wait=0,
        timeout=0.5,
        on_commit="delete",
        tls=modality_tls,
    )
    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, options)
    assert result.exit_status == EXIT_PENDING  # nobody listening yet: the SCP keeps retrying
    with Agent(scu_journal.path, aet=SCU, bind=LOCALHOST, port=agent_port, tls=modality_tls):
        tx_uid = result.transactions[0].transaction_uid
        assert scp.wait_delivered(tx_uid, 20).state == "delivered"
    assert not any(p.exists() for p in paths)
