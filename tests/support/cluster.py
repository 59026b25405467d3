"""Several ``stgcmt scp`` processes forming one archive: the same AE title, ``--database`` and
``--data-dir``, each on its own port of 127.0.0.1 (or all on one, ``--reuse-port``) with its
own ``--node`` name; and a relay a test can make hold connections (a peer that accepts TCP but
never answers), to catch a node in the middle of a delivery.

Every process is started with bounded waits and killed at the end by the fixture that made it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from support.common import LOCALHOST, PYTHON, free_port, wait_for

START_TIMEOUT = 30


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


class Node:
    """One ``stgcmt scp`` process of the archive."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        args: list[str],
        env: dict[str, str],
        port: int | None = None,
    ) -> None:
        """``port`` given: a port other nodes share (``--reuse-port``)."""
        self.name = name
        self.port = port or free_port()
        self.log = workdir / f"{name}.log"
        self.args = [*args, "--port", str(self.port), "--node", name]
        if port is not None:
            self.args.append("--reuse-port")
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        started_at = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "stgcmt", "scp", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        if not wait_for(
            lambda: self._listening(started_at) or self.proc.poll() is not None, START_TIMEOUT
        ):
            pytest.fail(f"node {self.name} did not start:\n{self.log.read_text()}")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def _listening(self, log_offset: int) -> bool:
        """This process says it listens (on a shared port another node answers already)."""
        with open(self.log, "rb") as log:
            log.seek(log_offset)
            said = b" listening on " in log.read()
        return said and listening(self.port)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """``count`` nodes sharing ``database_url`` and ``data_dir``; extra ``args`` go to each."""

    def __init__(self, workdir: Path, database_url: str, args: list[str], env: dict[str, str]):
        self.workdir = workdir
        self.database_url = database_url
        self.data_dir = workdir / "shared-data"
        self.common = ["--bind", LOCALHOST, "--database", database_url, "--data-dir"]
        self.common += [str(self.data_dir), *args]
        self.env = {**os.environ, **env}
        self.nodes: list[Node] = []
        self.relay: HoldingRelay | None = None
        """The relay the nodes report through, when the test put one in front of the peer."""

    def start(self, count: int, *, shared_port: int | None = None, **env: str) -> list[Node]:
        """Start ``count`` more nodes one after the other (the first creates the schema), with
        ``env`` added to their environment (e.g. ``STGCMT_CRASH_POINTS``); ``shared_port``:
        all on that port, with ``--reuse-port``."""
        new = [
            Node(
                f"node-{chr(ord('a') + len(self.nodes) + i)}",
                self.workdir,
                self.common,
                {**self.env, **env},
                shared_port,
            )
            for i in range(count)
        ]
        for node in new:
            node.start()
            self.nodes.append(node)
        return new

    def status(self) -> dict:
        """``stgcmt status --database URL --json``: what the whole cluster did."""
        done = subprocess.run(
            [PYTHON, "-m", "stgcmt", "status", "--database", self.database_url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.kill()


class HoldingRelay:
    """A TCP relay on 127.0.0.1 to ``target``. While :attr:`holding`, connections are accepted
    and left unanswered (recorded in :attr:`held`); otherwise bytes are relayed both ways."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.holding = threading.Event()
        self.held: list[socket.socket] = []
        self._server = socket.create_server((LOCALHOST, 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            if self.holding.is_set():
                self.held.append(client)
                continue
            upstream = socket.create_connection((LOCALHOST, self.target), timeout=10)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
        for held in self.held:
            held.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until either side closes, then close both."""
    source.settimeout(None)
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
