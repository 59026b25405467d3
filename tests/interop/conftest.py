"""Fixtures for the interop tests: Orthanc (one process per session) and DCMTK tools.

Both come from Debian packages; on a bare CI machine running as root the set-up installs them
(``ensure_debian_package``). Every process started here is stopped by its PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.common import LOCALHOST, free_port
from support.interop import (
    SCP_AET,
    SCU_AET,
    Dcmtk,
    Orthanc,
    OrthancPeer,
    ReportListener,
    StoreScp,
    find_command,
    find_dcmtk,
    running_storescp,
)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    binary = find_command("Orthanc", "orthanc", "/usr/sbin/Orthanc")
    scp_port, scu_port = free_port(), free_port()
    while scu_port == scp_port:
        scu_port = free_port()

    def modality(aet: str, port: int) -> dict:
        return {"AET": aet, "Host": LOCALHOST, "Port": port, "AllowStorageCommitment": True}

    server = Orthanc(binary, tmp_path_factory.mktemp("orthanc"))
    server.start(
        {"stgcmt-scp": modality(SCP_AET, scp_port), "stgcmt-scu": modality(SCU_AET, scu_port)}
    )
    try:
        yield OrthancPeer(server, scp_port, scu_port)
    finally:
        server.stop()


@pytest.fixture
def scu_listener(orthanc: OrthancPeer) -> Iterator[ReportListener]:
    """Our SCU-side N-EVENT-REPORT listener, where Orthanc sends reports for ``STGCMT_SCU``."""
    listener = ReportListener(SCU_AET, orthanc.scu_port).start()
    try:
        yield listener
    finally:
        listener.stop()


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    return find_dcmtk()


@pytest.fixture
def storescp(dcmtk: Dcmtk, tmp_path: Path) -> Iterator[StoreScp]:
    """DCMTK's storescp (Storage SCP only: no Storage Commitment) on a free port."""
    with running_storescp(dcmtk, tmp_path) as peer:
        yield peer
