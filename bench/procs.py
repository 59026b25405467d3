"""Child processes of a benchmark run.

Everything listens and connects on 127.0.0.1 only, every wait has a deadline, and every process
started here is stopped by its PID when the run ends, also on Ctrl-C or an exception: the
machine is shared, and a stray server would skew the next measurement.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

LOCALHOST = "127.0.0.1"


class BenchError(RuntimeError):
    """Something broke (not a slow figure): a peer did not start, a transfer failed."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def free_port_everywhere() -> int:
    """A port free on every interface: Orthanc 1.10 cannot be told to bind 127.0.0.1 only."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def dcmtk_env(**extra: str) -> dict[str, str]:
    """DCMTK (and Orthanc, built on it) leave Nagle on unless TCP_NODELAY=1 is set: without it
    every small PDU waits for a delayed ACK (~40 ms) and the figures would measure that."""
    return {**os.environ, "TCP_NODELAY": "1", **extra}


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MB; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float, name: str) -> None:
    """Wait until something accepts TCP connections on the port (bounded), failing early if
    the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with status {process.returncode} during start-up")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{name} not listening on {LOCALHOST}:{port} after {timeout:.0f} s")


class Children:
    """The processes a run started; :meth:`stop_all` ends every one still alive, by PID."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: list[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a server in its own session so a Ctrl-C in the terminal reaches only us; we
        stop it ourselves, in order. ``env`` None: this process's environment."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """SIGTERM (servers shut down cleanly), then SIGKILL if it hangs."""
        if process in self._procs:
            self._procs.remove(process)
        if process.poll() is not None:
            return
        try:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for process in reversed(list(self._procs)):
            self.stop(process)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def run_timed(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> tuple[float, int]:
    """Run a client to completion; (wall seconds, exit status). Output goes to ``log``;
    ``env`` None: this process's environment."""
    start = time.perf_counter()
    done = subprocess.run(
        argv,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
        check=False,
    )
    return time.perf_counter() - start, done.returncode


def run_parallel(
    argvs: list[list[str]], *, env: dict[str, str], timeout: float, log: Path
) -> tuple[float, list[int]]:
    """Start several clients at once and wait for all (bounded); (wall seconds from the first
    start to the last exit, exit statuses). Stragglers past the deadline are killed."""
    deadline = time.monotonic() + timeout
    procs: list[subprocess.Popen[bytes]] = []
    with open(log, "ab") as out:
        start = time.perf_counter()
        try:
            for argv in argvs:
                procs.append(
                    subprocess.Popen(
                        argv,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                )
            codes = [p.wait(timeout=max(0.1, deadline - time.monotonic())) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
        return time.perf_counter() - start, codes
