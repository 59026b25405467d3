"""The servers under test, each a plain child process on 127.0.0.1: our SCP
(``python -m stgcmt scp``), DCMTK's ``storescp`` and Orthanc with a generated configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import (
    LOCALHOST,
    BenchError,
    Children,
    dcmtk_env,
    free_port,
    free_port_everywhere,
    nagle_env,
    peak_rss_mb,
    wait_listening,
)

SCU_AET = "BENCHSCU"
"""Calling AE of storescu and stgcmt send."""
PEER_AET = "BENCHPEER"
"""Calling AE of the reference peer: requests commitment, receives reports."""
START_TIMEOUT = 60.0


@dataclass
class Server:
    """A running server: what a client needs to reach it, and its process."""

    name: str
    aet: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.process.pid)


def _scp_toml(data_dir: Path, port: int, peer_port: int) -> str:
    """Defaults as shipped (checksum verification, reports on a new association), except that
    only the bench's own AEs on 127.0.0.1 are known."""
    return f"""\
[scp]
aet = "STGCMT_SCP"
bind = "{LOCALHOST}"
port = {port}
data_dir = "{data_dir}"

[[remote]]
aet = "{SCU_AET}"
host = "{LOCALHOST}"
port = {free_port()}

[[remote]]
aet = "{PEER_AET}"
host = "{LOCALHOST}"
port = {peer_port}
"""


LOOPS = {"stgcmt": "asyncio", "stgcmt+uvloop": "uvloop"}
"""Our SCP's variants by name: the event loop it runs on (``STGCMT_LOOP``)."""


def start_our_scp(
    children: Children, workdir: Path, peer_port: int, name: str = "stgcmt"
) -> Server:
    """``python -m stgcmt scp --config ...`` in a new process with its own data directory,
    on the event loop its ``name`` stands for (:data:`LOOPS`)."""
    workdir.mkdir(parents=True)
    port = free_port()
    config = workdir / "scp.toml"
    config.write_text(_scp_toml(workdir / "data", port, peer_port))
    argv = [sys.executable, "-m", "stgcmt", "scp", "--config", str(config)]
    env = {**os.environ, "STGCMT_LOOP": LOOPS[name]}
    process = children.start(argv, log=workdir / "scp.log", env=env)
    try:
        wait_listening(port, process, START_TIMEOUT, name)
    except BenchError:
        children.stop(process)
        raise BenchError(_tail(workdir / "scp.log", f"{name} scp did not start")) from None
    return Server(name, "STGCMT_SCP", port, process, workdir)


def start_storescp(
    children: Children, binary: str, workdir: Path, *, nagle: bool = False
) -> Server:
    """DCMTK ``storescp`` writing Part 10 files into a folder (its default: one association at
    a time, no --fork); ``nagle``: without ``TCP_NODELAY=1``, as Debian runs it."""
    out = workdir / "out"
    out.mkdir(parents=True)
    port = free_port()
    argv = [binary, "--aetitle", "STORESCP", "-od", str(out), str(port)]
    env = nagle_env() if nagle else dcmtk_env()
    process = children.start(argv, log=workdir / "storescp.log", env=env)
    wait_listening(port, process, START_TIMEOUT, "storescp")
    return Server("storescp", "STORESCP", port, process, workdir)


def count_files(folder: Path) -> int:
    """How many files storescp has written so far. Nothing is deleted during a run: deleting
    thousands of files makes the next file creations on ext4 10-30x slower for seconds, and
    whoever is measured next would pay for it."""
    return sum(1 for path in folder.iterdir() if path.is_file())


@dataclass
class Orthanc(Server):
    http_port: int = 0

    def get(self, path: str, timeout: float = 30.0) -> Any:
        url = f"http://{LOCALHOST}:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])


def _orthanc_config(workdir: Path, dicom_port: int, http_port: int, peer_port: int) -> dict:
    """Orthanc's defaults except what a private, loopback-only instance needs."""
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    return {
        "Name": "stgcmt-bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "Plugins": [],
        "LuaScripts": [],
        "DicomModalitiesInDatabase": False,
        "DicomModalities": {
            "bench-peer": {
                "AET": PEER_AET,
                "Host": LOCALHOST,
                "Port": peer_port,
                "AllowStorageCommitment": True,
            }
        },
    }


def start_orthanc(children: Children, binary: str, workdir: Path, peer_port: int) -> Orthanc:
    """Orthanc as a plain process (not the system service), ready when GET /system answers."""
    workdir.mkdir(parents=True)
    dicom_port = free_port_everywhere()
    http_port = free_port_everywhere()
    while http_port == dicom_port:
        http_port = free_port_everywhere()
    config = workdir / "orthanc.json"
    config.write_text(json.dumps(_orthanc_config(workdir, dicom_port, http_port, peer_port)))
    log = workdir / "orthanc.log"
    process = children.start([binary, str(config)], log=log, env=dcmtk_env(), cwd=workdir)
    server = Orthanc("orthanc", "ORTHANC", dicom_port, process, workdir, http_port)
    try:
        _wait_orthanc(server)
    except BenchError:
        children.stop(process)
        raise BenchError(_tail(log, "Orthanc did not start")) from None
    return server


def _wait_orthanc(server: Orthanc) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"Orthanc exited with status {server.process.returncode}")
        try:
            if server.get("/system", timeout=2).get("DicomPort") == server.port:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError("Orthanc did not answer GET /system")


def _tail(log: Path, headline: str, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        text = ["(no log)"]
    return headline + ":\n" + "\n".join(text)
