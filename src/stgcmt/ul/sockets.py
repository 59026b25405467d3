"""TCP options of every DICOM socket (acceptor and requester, plain and TLS).

``TCP_NODELAY``: our own small PDUs (a C-STORE response, a command after its data set) go out
at once instead of waiting for the peer's ACK of the previous segment.

``TCP_QUICKACK`` (Linux): many peers leave Nagle's algorithm on (Debian's storescu without
``TCP_NODELAY=1``, pynetdicom, most modalities). Such a peer holds its next small segment (the
data set PDU after the command PDU) until our ACK of the last one arrives, and Linux delays
that ACK by up to 40 ms when it has nothing to send back: 40 ms per instance. ``TCP_QUICKACK``
makes the kernel acknowledge at once, but the kernel clears it again by itself, so it is set
again after every read (:func:`rearm_quickack`).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
"""None where the platform has no such option (only Linux has it)."""


def tune(sock: Any) -> None:
    """Options for a socket that has just connected; ``sock`` None (no socket, e.g. a pipe in
    a test transport) is left alone. A failure (a socket already closed by the peer) is not
    an error: the association goes on, only slower."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rearm_quickack(sock)


def rearm_quickack(sock: Any) -> None:
    """Acknowledge the bytes just read at once rather than after the delayed-ACK timer: call
    after every read (the kernel falls back to delayed ACKs on its own)."""
    if sock is None or _QUICKACK is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
