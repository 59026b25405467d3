"""Delivery to a real collector (Debian's rsyslogd on 127.0.0.1) over UDP and TLS, to a file,
and what a collector that is down or never reads does to the sender: nothing that blocks."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stgcmt.audit import transport
from stgcmt.audit.syslog import syslog_message
from stgcmt.audit.transport import (
    Channel,
    FileDestination,
    TlsDestination,
    UdpDestination,
    tls_context,
)

from support.common import LOCALHOST, free_port, wait_for
from support.rsyslog import CollectorTls, Rsyslog
from support.tls_certs import CertificateAuthority, Credentials


def message(number: int, padding: int = 0) -> bytes:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification'
        f' EventDateTime="2026-01-01T00:00:00Z" EventOutcomeIndicator="0"><EventID'
        f' csd-code="{number}" codeSystemName="DCM" originalText="{"x" * padding}"/>'
        f'</EventIdentification><ActiveParticipant UserID="A" UserIsRequestor="true"/>'
        f'<AuditSourceIdentification AuditSourceID="S"/></AuditMessage>'
    )
    return syslog_message(xml.encode(), hostname="h", procid="1", at=0)


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def client(authority: CertificateAuthority) -> Credentials:
    return authority.issue("stgcmt-client")


@pytest.fixture
def channels() -> Iterator[list[Channel]]:
    opened: list[Channel] = []
    yield opened
    for channel in opened:
        channel.close(timeout=1.0)


def tls_channel(port: int, authority, client, channels, **kw) -> Channel:
    context = tls_context(authority.cert, client.cert, client.key)
    channel = Channel(TlsDestination(LOCALHOST, port, context), **kw)
    channels.append(channel)
    return channel


def test_udp_and_file(tmp_path: Path, channels: list[Channel]) -> None:
    with Rsyslog(tmp_path / "rsyslog") as collector:
        udp = Channel(UdpDestination(LOCALHOST, collector.udp_port))
        local = Channel(FileDestination(tmp_path / "audit" / "audit.log"))
        channels += [udp, local]
        for number in range(20):
            udp.offer(message(number))
            local.offer(message(number))
        received = collector.wait_messages(20)
    assert [r.event_id for r in received] == [str(n) for n in range(20)]
    assert wait_for(lambda: local.sent == 20, 5)
    lines = (tmp_path / "audit" / "audit.log").read_bytes().splitlines()
    assert lines == [message(n) for n in range(20)]


def test_tls_with_a_client_certificate_in_order(tmp_path, authority, client, channels) -> None:
    with Rsyslog(tmp_path / "rsyslog", CollectorTls.issue(authority)) as collector:
        channel = tls_channel(collector.tls_port, authority, client, channels)
        for number in range(50):
            channel.offer(message(number, padding=number * 40))
        received = collector.wait_messages(50)
    assert [r.event_id for r in received] == [str(n) for n in range(50)]
    assert channel.dropped == 0


def test_a_collector_we_do_not_trust_gets_nothing(tmp_path, authority, client, channels) -> None:
    stranger = CertificateAuthority(tmp_path / "other-ca", "another CA")
    with Rsyslog(tmp_path / "rsyslog", CollectorTls.issue(stranger)) as collector:
        channel = tls_channel(collector.tls_port, authority, client, channels)
        channel.offer(message(1))
        time.sleep(1.0)
        assert collector.messages() == [] and channel.sent == 0 and channel.pending() == 1


def test_a_collector_down_at_first_gets_everything_once_up(
    tmp_path, authority, client, channels
) -> None:
    port = free_port()
    channel = tls_channel(port, authority, client, channels)
    for number in range(5):
        channel.offer(message(number))
    time.sleep(1.0)  # refused, refused: backing off
    assert channel.sent == 0
    started = time.monotonic()
    with Rsyslog(tmp_path / "rsyslog", CollectorTls.issue(authority), tls_port=port) as collector:
        received = collector.wait_messages(5, timeout=transport.BACKOFF_CAP)
        assert time.monotonic() - started < 10, "backoff: the retry came within a few seconds"
    assert [r.event_id for r in received] == ["0", "1", "2", "3", "4"]


def test_a_full_queue_drops_the_oldest(tmp_path, authority, client, channels, caplog) -> None:
    port = free_port()
    channel = tls_channel(port, authority, client, channels, capacity=3)
    with caplog.at_level(logging.WARNING, "stgcmt.audit"):
        for number in range(10):
            channel.offer(message(number))
    assert channel.dropped == 7
    drops = [r for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert len(drops) == 1, "logged once a minute, not once a message"
    with Rsyslog(tmp_path / "rsyslog", CollectorTls.issue(authority), tls_port=port) as collector:
        received = collector.wait_messages(3, timeout=transport.BACKOFF_CAP)
    assert [r.event_id for r in received] == ["7", "8", "9"]


class SilentTlsPeer:
    """A TLS server that completes the handshake and then never reads a byte."""

    def __init__(self, credentials: Credentials) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(credentials.cert, credentials.key)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen()
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            raw, _ = self._listener.accept()
            self._held.append(self._context.wrap_socket(raw, server_side=True))
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()
        for held in self._held:
            held.close()


def test_a_peer_that_never_reads_blocks_nothing(authority, client, channels) -> None:
    peer = SilentTlsPeer(authority.issue("127.0.0.1"))
    try:
        channel = tls_channel(peer.port, authority, client, channels, capacity=100)
        big = [message(n, padding=8000) for n in range(2000)]  # 16 MB: more than any buffer
        started = time.monotonic()
        for item in big:
            channel.offer(item)
        offering = time.monotonic() - started
        assert offering < 1.0, f"offer() took {offering:.2f} s for 2000 messages"
        assert channel.dropped > 1000
        started = time.monotonic()
        channel.close(timeout=0.5)
        assert time.monotonic() - started < 3.0, "close() ends a write the peer never reads"
    finally:
        peer.close()
