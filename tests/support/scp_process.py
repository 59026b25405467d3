"""``stgcmt scp`` in a process of its own, as users run it: started on a given port, killed
with a signal (SIGKILL by default) and restarted on the same data dir."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from support.common import LOCALHOST, PYTHON, wait_for

START_TIMEOUT = 20


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


class ScpProcess:
    def __init__(self, cwd: Path, args: list[str]) -> None:
        self.cwd = cwd
        self.args = args
        self.port = int(args[args.index("--port") + 1])
        self.log = cwd / "scp.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ScpProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "stgcmt", "scp", *self.args], cwd=self.cwd, stdout=log, stderr=log
            )
        if not wait_for(
            lambda: _listening(self.port) or self.proc.poll() is not None, START_TIMEOUT
        ):
            pytest.fail("SCP did not start:\n" + self.log.read_text())
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)
