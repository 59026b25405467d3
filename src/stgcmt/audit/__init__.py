"""The IHE ATNA audit trail: DICOM PS3.15 Annex A.5 messages about what a service did, sent
as RFC 5424 syslog over UDP (RFC 5426) or TLS (RFC 5425) and/or appended to a local file.

:func:`attach` subscribes an :class:`~stgcmt.audit.observer.AuditObserver` to a service's
events; messages are queued per destination and sent from threads of their own
(:mod:`~stgcmt.audit.transport`), so a collector that is down or slow never holds a C-STORE up.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

from stgcmt.audit.observer import AuditObserver, LocalApplication
from stgcmt.audit.syslog import Severity, syslog_message
from stgcmt.audit.transport import (
    Channel,
    Destination,
    FileDestination,
    TlsDestination,
    UdpDestination,
    tls_context,
)
from stgcmt.config.audit import AuditConfig
from stgcmt.events import Events

CLOSE_TIMEOUT = 5.0
"""Seconds a stopping service gives its queued audit messages to leave."""


class AuditTrail:
    """The destinations of one service's audit messages."""

    def __init__(self, channels: Sequence[Channel], hostname: str) -> None:
        self.channels = tuple(channels)
        self.hostname = hostname
        self._procid = str(os.getpid())
        self._unsubscribe: Callable[[], None] = lambda: None

    @classmethod
    def open(cls, config: AuditConfig) -> AuditTrail:
        """A channel per configured destination (none when the audit trail is off)."""
        destinations: list[Destination] = []
        collector = config.collector
        if collector is not None and collector.transport == "udp":
            destinations.append(UdpDestination(collector.host, collector.port))
        elif collector is not None:
            context = tls_context(config.ca, config.cert, config.key)
            destinations.append(TlsDestination(collector.host, collector.port, context))
        if config.file is not None:
            destinations.append(FileDestination(config.file))
        return cls([Channel(d) for d in destinations], socket.gethostname())

    def observe(self, events: Events, local: LocalApplication) -> None:
        """Turn the service's events into messages from now until :meth:`close`."""
        self._unsubscribe = events.subscribe(AuditObserver(self.record, local))

    def record(self, xml: bytes, at: float, severity: Severity) -> None:
        """Queue one audit message on every destination; never blocks."""
        message = syslog_message(
            xml, hostname=self.hostname, procid=self._procid, at=at, severity=severity
        )
        for channel in self.channels:
            channel.offer(message)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop observing, then give queued messages ``timeout`` seconds to leave."""
        self._unsubscribe()
        for channel in self.channels:
            channel.close(timeout)


def attach(config: AuditConfig, events: Events, aet: str) -> AuditTrail:
    """The audit trail ``config`` asks for, observing ``events`` of the service whose AE
    title is ``aet``. Attach before the service starts (its start is audited); close it after
    the service stopped."""
    trail = AuditTrail.open(config)
    if trail.channels:
        local = LocalApplication(aet, trail.hostname, config.source_id or trail.hostname)
        trail.observe(events, local)
    return trail


__all__ = ["AuditObserver", "AuditTrail", "LocalApplication", "attach"]
