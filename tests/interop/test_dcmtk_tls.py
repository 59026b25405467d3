"""DICOM TLS against DCMTK's TLS-enabled tools (Debian's DCMTK is built with OpenSSL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stgcmt.config import TlsConfig

from support.common import LOCALHOST, remote, write_instances
from support.interop import SCP_AET, Dcmtk
from support.tls_certs import CertificateAuthority

STORESCU_AET = "STORESCU"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("archive"), ca.issue("storescu")


def _storescu_tls(dcmtk: Dcmtk, port: int, files: list[Path], ca, client=None):
    identity = ["+tls", str(client.key), str(client.cert)] if client else ["+tla"]
    return dcmtk.run(
        "storescu",
        *identity,
        *("+cf", str(ca.cert), "-aet", STORESCU_AET, "-aec", SCP_AET),
        *(LOCALHOST, str(port)),
        *map(str, files),
    )


def test_storescu_over_tls_with_client_certificate(dcmtk: Dcmtk, scp_factory, pki, tmp_path):
    ca, archive, client = pki
    tls = TlsConfig(archive.cert, archive.key, ca.cert, require_client_cert=True)
    scp = scp_factory(aet=SCP_AET, remotes=(remote(STORESCU_AET, 104),), tls=tls)
    files = write_instances(tmp_path / "outbox", 5)

    done = _storescu_tls(dcmtk, scp.port, files, ca, client)
    assert done.returncode == 0, done.stdout + done.stderr
    assert scp.store.count() == 5

    anonymous = _storescu_tls(dcmtk, scp.port, write_instances(tmp_path / "more", 1), ca)
    assert anonymous.returncode != 0  # no client certificate: handshake refused
    plain = dcmtk.run(
        "storescu", "-aet", STORESCU_AET, "-aec", SCP_AET, LOCALHOST, str(scp.port), str(files[0])
    )
    assert plain.returncode != 0
    assert scp.store.count() == 5
