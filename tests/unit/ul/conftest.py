"""Fixtures for the engine tests: engine servers on free ports, raw-socket peers that speak
PDUs by hand (to misbehave on purpose), and the DCMTK fixtures of the interop tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from stgcmt.config import Timeouts
from stgcmt.engine import api
from stgcmt.engine.acse import answer_contexts, user_information
from stgcmt.engine.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, PDU, PDUReader, decode_pdu
from stgcmt.netapi import Handlers

from conftest import LOCALHOST
from interop.conftest import dcmtk, storescp  # noqa: F401  (fixtures, used by name)

FAST = Timeouts(acse=2.0, dimse=2.0, network=10.0, connect=2.0, associate_rq=2.0, pdu=5.0)


@pytest.fixture
def engine_server() -> Iterator[Callable[..., api.Server]]:
    started: list[api.Server] = []

    def start(handlers: Handlers | None = None, aet: str = "ENGINE", **kwargs) -> api.Server:
        kwargs.setdefault("timeouts", FAST)
        server = api.Server(aet, LOCALHOST, 0, handlers or Handlers(), **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class RawPeer:
    """One TCP connection on which a test writes and reads PDUs itself."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self._reader = PDUReader()
        self._received: list[PDU] = []

    @classmethod
    def connect(cls, port: int) -> RawPeer:
        return cls(socket.create_connection((LOCALHOST, port), timeout=5))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> PDU | None:
        """The next PDU, or None once the other side has closed the connection."""
        while not self._received:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self._received += [decode_pdu(t, body) for t, body in self._reader.feed(data)]
        return self._received.pop(0)

    def close(self) -> None:
        self.sock.close()


class RawAcceptor:
    """Listens once; accepts the association with every context it supports, then hands the
    connection to ``script`` (in a thread)."""

    def __init__(
        self,
        supported: dict[str, tuple[str, ...]],
        script: Callable[[RawPeer], None],
        max_pdu: int = 16384,
    ) -> None:
        self._max_pdu = max_pdu
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = self._listener.getsockname()[1]
        self._supported = supported
        self._script = script
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            sock, _ = self._listener.accept()
            peer = RawPeer(sock)
            rq = peer.receive()
            assert isinstance(rq, A_ASSOCIATE_RQ)
            contexts = answer_contexts(rq.presentation_contexts, self._supported)
            ac = A_ASSOCIATE_AC(
                rq.called_ae_title, rq.calling_ae_title, contexts, user_information(self._max_pdu)
            )
            peer.send(ac.encode())
            self._script(peer)
            peer.close()
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self._listener.close()

    def join(self) -> None:
        self._thread.join(10)
        assert not self._thread.is_alive(), "raw acceptor script did not finish"
        if self.error is not None:
            raise self.error
