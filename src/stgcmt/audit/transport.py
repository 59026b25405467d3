"""Getting audit messages out without ever holding DICOM work up: each destination (syslog
over UDP, RFC 5426; over TLS, RFC 5425; a local file) has a bounded queue and a sender thread
of its own. :meth:`Channel.offer` never blocks: when the queue is full (a collector down or
slower than the archive) the oldest message is dropped, counted, and logged once a minute.
A TLS collector that fails is reconnected with exponential backoff while messages wait.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Protocol

from stgcmt.audit.syslog import octet_counted

log = logging.getLogger("stgcmt.audit")

QUEUE_CAPACITY = 10_000
"""Messages a channel holds while its destination cannot take them (a few MB at most)."""
DROP_LOG_INTERVAL = 60.0
"""Seconds between two warnings about dropped messages on one channel."""
BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
CONNECT_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
"""A collector that takes no bytes for this long (it never reads) is dropped and reconnected."""
MAX_UDP_MESSAGE = 65_507
"""The largest UDP payload over IPv4 (RFC 5426 3.2: a receiver may take less)."""


class MessageRefused(ValueError):
    """This message can never be delivered to this destination (too large): drop it."""


class Destination(Protocol):
    """Where a channel's thread delivers. ``send`` raises OSError when the destination is
    unavailable (the message is retried) and MessageRefused when the message is at fault."""

    name: str

    def send(self, message: bytes) -> None: ...

    def close(self) -> None: ...


class UdpDestination:
    """RFC 5426: one syslog message per datagram, no framing, no acknowledgement."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.name = f"udp://{host}:{port}"
        self._socket: socket.socket | None = None

    def send(self, message: bytes) -> None:
        if len(message) > MAX_UDP_MESSAGE:
            raise MessageRefused(f"{len(message)} bytes do not fit in a UDP datagram")
        if self._socket is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                *self.address, type=socket.SOCK_DGRAM
            )[0]
            self._socket = socket.socket(family, kind, proto)
            self._target = address
        self._socket.sendto(message, self._target)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The collector's certificate must chain to ``ca`` (else the system's trust store) and
    name the host we connect to; ``cert``/``key`` are presented when the collector asks."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


class TlsDestination:
    """RFC 5425: one TLS connection, octet-counted messages; (re)connected on demand."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.host, self.port = host, port
        self.name = f"tls://{host}:{port}"
        self._context = context
        self._socket: ssl.SSLSocket | None = None

    def send(self, message: bytes) -> None:
        if self._socket is not None and _closed_by_peer(self._socket):
            log.info("audit %s: the collector closed the connection; reconnecting", self.name)
            self.close()
        if self._socket is None:
            self._socket = self._connect()
        try:
            self._socket.sendall(octet_counted(message))
        except OSError:
            self.close()
            raise

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        try:
            secure = self._context.wrap_socket(raw, server_hostname=self.host)
        except OSError:
            raw.close()
            raise
        secure.settimeout(WRITE_TIMEOUT)
        log.info("audit %s: connected (%s)", self.name, secure.version())
        return secure

    def close(self) -> None:
        """Also from another thread, to end a write a collector never reads."""
        secure, self._socket = self._socket, None
        if secure is not None:
            with contextlib.suppress(OSError):  # already broken: closing is all that is left
                secure.shutdown(socket.SHUT_RDWR)
            secure.close()


def _closed_by_peer(sock: ssl.SSLSocket) -> bool:
    """A collector never sends: a readable socket means it closed (or broke) the connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class FileDestination:
    """The same RFC 5424 messages appended to a local file, one per line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held for the channel's life

    def send(self, message: bytes) -> None:
        self._file.write(message + b"\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Channel:
    """One destination with its bounded queue and its sender thread."""

    def __init__(self, destination: Destination, capacity: int = QUEUE_CAPACITY) -> None:
        self.destination = destination
        self.name = name = destination.name
        self.sent = 0
        self.dropped = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._capacity = capacity
        self._ready = threading.Condition()
        self._closing = False
        self._last_drop_log = -DROP_LOG_INTERVAL
        self._thread = threading.Thread(target=self._run, name=f"stgcmt-audit {name}", daemon=True)
        self._thread.start()

    def offer(self, message: bytes) -> None:
        """Queue ``message``; never blocks (the oldest is dropped when the queue is full)."""
        with self._ready:
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                self._dropped_one()
            self._queue.append(message)
            self._ready.notify()

    def _dropped_one(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._last_drop_log = now
            log.warning(
                "audit %s: %d messages queued and the destination is not taking them;"
                " dropped the oldest (%d dropped so far; check the collector)",
                self.name,
                self._capacity,
                self.dropped,
            )

    def pending(self) -> int:
        with self._ready:
            return len(self._queue)

    def _next(self) -> bytes | None:
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            return self._queue[0] if self._queue else None

    def _run(self) -> None:
        delay = BACKOFF_START
        while (message := self._next()) is not None:
            try:
                self.destination.send(message)
            except MessageRefused as exc:
                log.warning("audit %s: message dropped: %s", self.name, exc)
            except OSError as exc:
                log.warning("audit %s: %s; retrying in %.1f s", self.name, exc, delay)
                if self._wait_closing(delay):
                    return
                delay = min(BACKOFF_CAP, delay * 2)
                continue
            else:
                self.sent += 1
            delay = BACKOFF_START
            self._remove(message)

    def _remove(self, message: bytes) -> None:
        with self._ready:
            if self._queue and self._queue[0] is message:  # not dropped meanwhile
                self._queue.popleft()

    def _wait_closing(self, seconds: float) -> bool:
        with self._ready:
            return self._ready.wait_for(lambda: self._closing, timeout=seconds)

    def close(self, timeout: float) -> None:
        """Send what is queued within ``timeout`` seconds, then stop (a destination still
        failing or not reading is closed under its thread, the rest counted as dropped)."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.destination.close()
            self._thread.join(1.0)
        with self._ready:
            self.dropped += len(self._queue)
            self._queue.clear()
        if self.dropped:
            log.warning("audit %s: %d messages were never delivered", self.name, self.dropped)
        self.destination.close()
