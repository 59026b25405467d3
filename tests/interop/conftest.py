"""Fixtures for the interop tests: Orthanc (one process per session) and DCMTK tools.

Both come from Debian packages; on a bare CI machine running as root the set-up installs them
(``ensure_debian_package``). Every process started here is stopped by its PID.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.common import LOCALHOST, ensure_debian_package, free_port
from support.interop import (
    SCP_AET,
    SCU_AET,
    Dcmtk,
    Orthanc,
    OrthancPeer,
    ReportListener,
    StoreScp,
    find_command,
    wait_listening,
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
    return Dcmtk(
        storescu=ensure_debian_package("storescu", "dcmtk"),
        echoscu=ensure_debian_package("echoscu", "dcmtk"),
        storescp=ensure_debian_package("storescp", "dcmtk"),
    )


@pytest.fixture
def storescp(dcmtk: Dcmtk, tmp_path: Path) -> Iterator[StoreScp]:
    """DCMTK's storescp (Storage SCP only: no Storage Commitment) on a free port."""
    peer = StoreScp("STORESCP", free_port(), tmp_path / "storescp-out")
    peer.output.mkdir()
    log = tmp_path / "storescp.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                dcmtk.storescp,
                "--aetitle",
                peer.aet,
                "--output-directory",
                str(peer.output),
                str(peer.port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dcmtk.env(),
        )
    try:
        wait_listening(peer.port, process, timeout=15)
        yield peer
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.returncode not in (0, -15, None):
            print(log.read_text(errors="replace")[-3000:])
