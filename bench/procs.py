"""Child processes of a benchmark run.

Everything listens and connects on 127.0.0.1 only, every wait has a deadline, and every process
started here is stopped by its PID when the run ends, also on Ctrl-C or an exception: the
machine is shared, and a stray server would skew the next measurement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
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


def nagle_env() -> dict[str, str]:
    """DCMTK as Debian ships it: no ``TCP_NODELAY`` in the environment, Nagle on."""
    return {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


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


class Watchdog:
    """Kills a client that outlives its deadline, from a timer thread, so that the caller can
    block in ``wait()``: ``subprocess.run(timeout=)`` and ``Popen.wait(timeout=)`` poll with
    sleeps of up to 50 ms, which rounds every wall time up to the next step (25 % of a 0.2 s
    run). A blocking ``wait()`` returns the moment the child is reaped."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
        self.procs = procs
        self.fired = False
        self._timer = threading.Timer(timeout, self._expired)
        self._timer.daemon = True

    def _expired(self) -> None:
        self.fired = True
        self._kill()

    def _kill(self) -> None:
        for process in self.procs:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._kill()  # on an exception in the caller: nothing of ours outlives the block
        for process in self.procs:
            process.wait()


def run_timed(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> tuple[float, int]:
    """Run a client to completion; (wall seconds, exit status). Output goes to ``log``;
    ``env`` None: this process's environment."""
    seconds, codes = run_parallel([argv], env=env, timeout=timeout, log=log)
    return seconds, codes[0]


def run_parallel(
    argvs: list[list[str]],
    *,
    env: dict[str, str] | None,
    timeout: float,
    log: IO[bytes] | None = None,
) -> tuple[float, list[int]]:
    """Start several clients at once and wait for all, each with a blocking ``wait()``; (wall
    seconds from the first start to the last exit, exit statuses). Past the deadline the
    watchdog kills them and this raises :class:`BenchError`."""
    procs: list[subprocess.Popen[bytes]] = []
    with Watchdog(procs, timeout) as watchdog:
        start = time.perf_counter()
        for argv in argvs:
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=log or subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            )
        codes = [process.wait() for process in procs]
        seconds = time.perf_counter() - start
    if watchdog.fired:
        raise BenchError(f"{argvs[0][0]} still running after {timeout:.0f} s: killed")
    return seconds, codes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (every thread, also those that
    have ended), from /proc/<pid>/stat, in seconds (clock-tick resolution, 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")
