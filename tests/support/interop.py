"""Real third-party peers for the interop tests: an Orthanc process driven over its REST API,
and a report listener built on our networking seam.

Orthanc 1.10 has no listen-address option and binds every interface, so its ports are checked
free on all interfaces; everything the tests send goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from stgcmt import ul as net
from stgcmt.config import RemoteAE, Timeouts
from stgcmt.dicom.commitment import (
    CommitmentReport,
    CommitmentRequest,
    Reference,
    build_action_information,
)
from stgcmt.dicom.uids import new_transaction_uid

from support.common import LOCALHOST, ensure_debian_package, free_port

ORTHANC_AET = "ORTHANC"
STARTUP_TIMEOUT = 30.0
REST_TIMEOUT = 30.0
FAST_TIMEOUTS = Timeouts(acse=10.0, dimse=20.0, network=30.0, connect=5.0)


def free_port_everywhere() -> int:
    """A port free on every interface (Orthanc binds 0.0.0.0), not only on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class OrthancError(RuntimeError):
    pass


class Orthanc:
    """One Orthanc process with its own config, storage and log under ``workdir``."""

    def __init__(self, binary: str, workdir: Path, aet: str = ORTHANC_AET) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.aet = aet
        self.dicom_port = free_port_everywhere()
        self.http_port = free_port_everywhere()
        while self.http_port == self.dicom_port:
            self.http_port = free_port_everywhere()
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    @property
    def remote(self) -> RemoteAE:
        """Orthanc as a peer of ours (always addressed on loopback)."""
        return RemoteAE(self.aet, LOCALHOST, self.dicom_port)

    def write_config(self, modalities: dict[str, dict[str, Any]]) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "stgcmt-interop",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomScuTimeout": 10,
            "Plugins": [],
            "LuaScripts": [],
            "DicomModalitiesInDatabase": False,
            "DicomModalities": modalities,
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, modalities: dict[str, dict[str, Any]]) -> Orthanc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config(modalities)
        env = {**os.environ, "TCP_NODELAY": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.binary, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise OrthancError(
                    f"Orthanc exited with status {self.process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            try:
                system = self.get("/system", timeout=2)
            except (OSError, OrthancError) as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            if system.get("DicomPort") == self.dicom_port:
                return
            raise OrthancError(f"another server answers on port {self.http_port}: {system}")
        raise OrthancError(
            f"Orthanc did not answer on {self.base_url}/system within {STARTUP_TIMEOUT:.0f} s"
            f" ({last_error}):\n" + self.log_tail()
        )

    def stop(self) -> None:
        """Terminate by PID (SIGTERM, then SIGKILL after 10 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no Orthanc log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- REST (stdlib only, loopback only) -----------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = REST_TIMEOUT
    ) -> Any:
        data: bytes | None
        headers = {}
        if isinstance(body, bytes):
            data = body
            headers["Content-Type"] = "application/dicom"
        elif isinstance(body, str):
            data = body.encode()
            headers["Content-Type"] = "text/plain"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        else:
            data = None
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise OrthancError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(payload) if payload.strip() else None

    def get(self, path: str, *, timeout: float = REST_TIMEOUT) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def lookup(self, uid: str) -> list[str]:
        """The resource types Orthanc holds under this DICOM UID (POST /tools/lookup)."""
        return [str(item["Type"]) for item in self.post("/tools/lookup", uid)]

    def upload(self, path: Path) -> str:
        """POST /instances with the Part 10 bytes; returns Orthanc's instance ID."""
        answer = self.post("/instances", Path(path).read_bytes())
        return str(answer["ID"])

    def set_modality(self, name: str, aet: str, port: int) -> None:
        """Declare (or update) a peer of Orthanc's at 127.0.0.1 with storage commitment on."""
        self.put(
            f"/modalities/{name}",
            {"AET": aet, "Host": LOCALHOST, "Port": port, "AllowStorageCommitment": True},
        )

    def wait_commitment_report(self, transaction_uid: str, timeout: float) -> dict[str, Any]:
        """Poll GET /storage-commitment/{uid} until its Status is no longer Pending."""
        deadline = time.monotonic() + timeout
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            report = self.get(f"/storage-commitment/{transaction_uid}")
            if report.get("Status") != "Pending":
                return report
            time.sleep(0.1)
        raise AssertionError(f"no report for {transaction_uid} within {timeout} s: {report}")


# -- our side as Storage Commitment SCU, on the networking seam -------------------------------


@dataclass
class ReceivedReport:
    """A report received by the listener, i.e. on an association the peer opened."""

    peer: net.PeerInfo
    event_type_id: int | None
    report: CommitmentReport


@dataclass
class ReportListener:
    """A ``net.Server`` that accepts Storage Commitment (requester may take the SCP role) and
    records every N-EVENT-REPORT it receives."""

    aet: str
    port_wanted: int = 0
    reports: list[ReceivedReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._received = threading.Condition()
        self._server = net.listen(
            self.aet,
            LOCALHOST,
            self.port_wanted,
            net.Handlers(n_event_report=self._on_report),
            commitment=True,
            timeouts=FAST_TIMEOUTS,
        )

    def _on_report(self, link: net.Link, event: net.EventReport) -> int:
        report = event.report()
        with self._received:
            self.reports.append(ReceivedReport(link.peer, event.event_type_id, report))
            self._received.notify_all()
        return 0

    def start(self) -> ReportListener:
        self._server.start()
        return self

    @property
    def port(self) -> int:
        return self._server.port

    def stop(self) -> None:
        self._server.stop()

    def wait_for(self, transaction_uid: str, timeout: float) -> ReceivedReport | None:
        def find() -> ReceivedReport | None:
            return next(
                (r for r in self.reports if r.report.transaction_uid == transaction_uid), None
            )

        with self._received:
            self._received.wait_for(lambda: find() is not None, timeout)
            return find()


def references(paths: Iterable[Path]) -> list[Reference]:
    refs = []
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        refs.append(Reference(str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return refs


def request_commitment(local_aet: str, peer: RemoteAE, refs: list[Reference]) -> tuple[str, int]:
    """Send one N-ACTION (Request Storage Commitment) on a fresh association and release it
    at once; returns (Transaction UID, N-ACTION status)."""
    transaction_uid = new_transaction_uid()
    information: Dataset = build_action_information(CommitmentRequest(transaction_uid, refs))
    with net.open_association(
        local_aet, peer, net.ContextPlan(commitment="scu"), timeouts=FAST_TIMEOUTS
    ) as association:
        status = association.n_action(information)
    assert status is not None, "no N-ACTION response"
    return transaction_uid, status


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


def find_dcmtk() -> Dcmtk:
    """DCMTK's tools from Debian (installed on the fly when we are root)."""
    return Dcmtk(
        storescu=ensure_debian_package("storescu", "dcmtk"),
        echoscu=ensure_debian_package("echoscu", "dcmtk"),
        storescp=ensure_debian_package("storescp", "dcmtk"),
    )


@contextmanager
def running_storescp(dcmtk: Dcmtk, folder: Path, *options: str) -> Iterator[StoreScp]:
    """DCMTK's storescp (Storage SCP only: no Storage Commitment) on a free port, with extra
    ``options`` (e.g. ``+xi``: accept Implicit VR Little Endian only); stopped afterwards, its
    log printed if it did not end cleanly."""
    peer = StoreScp("STORESCP", free_port(), folder / "storescp-out")
    peer.output.mkdir(parents=True)
    log = folder / "storescp.log"
    argv = [dcmtk.storescp, *options, "--aetitle", peer.aet, "-od", str(peer.output)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*argv, str(peer.port)],
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
