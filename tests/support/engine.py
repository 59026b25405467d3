"""Test helpers, importable from any test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from stgcmt.config import Timeouts
from stgcmt.dicom.commitment import CommitmentRequest, Reference, build_action_information
from stgcmt.ul.acse import answer_contexts, user_information
from stgcmt.ul.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, PDU, decode_pdu
from stgcmt.ul.pdu_reader import PDUReader

from support.common import LOCALHOST, SECONDARY_CAPTURE

FAST = Timeouts(acse=2.0, dimse=2.0, network=10.0, connect=2.0, associate_rq=2.0, pdu=5.0)


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


def data_set_of(path: Path) -> bytes:
    """A file's data set as sent (test files have a 132-byte preamble and a short meta)."""
    data = path.read_bytes()
    meta_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL value
    return data[144 + meta_length :]


def information(uid: str = "1.2.3.9") -> Dataset:
    return build_action_information(CommitmentRequest(uid, [Reference(SECONDARY_CAPTURE, "1.2")]))
