"""Fixtures for the interop tests: Orthanc (one process per session) and DCMTK tools.

Both come from Debian packages; on a bare CI machine running as root the set-up installs them
(``ensure_debian_package``). Every process started here is stopped by its PID.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import LOCALHOST, ensure_debian_package, free_port
from interop.peers import Orthanc, ReportListener

SCP_AET = "STGCMT_SCP"
SCU_AET = "STGCMT_SCU"


def find_command(command: str, package: str, *sbin: str) -> str:
    """Like ``ensure_debian_package``, but also looks in sbin directories that a non-root
    PATH may lack (Orthanc lives in /usr/sbin)."""

    def in_sbin() -> str | None:
        return next((c for c in sbin if os.access(c, os.X_OK)), None)

    found = in_sbin()
    if found:
        return found
    try:
        return ensure_debian_package(command, package)
    except pytest.fail.Exception:
        found = in_sbin()  # installed, but its directory is not on PATH
        if found:
            return found
        raise


@dataclass
class OrthancPeer:
    """The running Orthanc plus the ports its config declares for our two AEs."""

    server: Orthanc
    scp_port: int
    """Port our SCP must listen on: Orthanc knows it as modality ``stgcmt-scp``."""
    scu_port: int
    """Port our SCU listener must use: Orthanc knows it as modality ``stgcmt-scu``."""


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


@dataclass
class Dcmtk:
    storescu: str
    echoscu: str
    storescp: str

    @staticmethod
    def env() -> dict[str, str]:
        # DCMTK leaves Nagle on unless told; every small PDU would then wait for an ACK.
        return {**os.environ, "TCP_NODELAY": "1"}

    def run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [getattr(self, tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    return Dcmtk(
        storescu=ensure_debian_package("storescu", "dcmtk"),
        echoscu=ensure_debian_package("echoscu", "dcmtk"),
        storescp=ensure_debian_package("storescp", "dcmtk"),
    )


@dataclass
class StoreScp:
    aet: str
    port: int
    output: Path

    def received(self) -> list[Path]:
        return sorted(p for p in self.output.iterdir() if p.is_file())


def wait_listening(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with status {process.returncode}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"storescp not listening on port {port} after {timeout} s")


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
