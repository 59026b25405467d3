"""Debian's rsyslog as the real ATNA collector of the audit tests, and what a collector's
operator checks in what it received: the RFC 5424 header and the XML, validated against the
DICOM audit message schema (PS3.15 A.5.1, ``dicom_audit.rng`` beside this file).

:class:`Rsyslog` runs ``rsyslogd -n`` on a private configuration in a temporary folder: imudp
on a free 127.0.0.1 port and, with certificates, imtcp with the GnuTLS driver (RFC 5425,
octet-counted frames, the client's certificate checked against the CA). Every message received
is written to one file, as received (``%rawmsg%``), one per line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from support.common import LOCALHOST, ensure_debian_package, free_port, wait_for
from support.tls_certs import CertificateAuthority

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).with_name("dicom_audit.rng"))))
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) (?P<procid>\S+)"
    rb" (?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)",
    re.DOTALL,
)
BOM = b"\xef\xbb\xbf"
GTLS_DRIVER = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")


@dataclass(frozen=True)
class Received:
    """One syslog message as a collector sees it."""

    pri: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    xml: etree._Element

    @property
    def event_id(self) -> str:
        return self.xml.find("EventIdentification/EventID").get("csd-code")

    def participants(self) -> list[etree._Element]:
        return self.xml.findall("ActiveParticipant")

    def objects(self) -> list[etree._Element]:
        return self.xml.findall("ParticipantObjectIdentification")


def parse(line: bytes) -> Received:
    """An RFC 5424 message carrying an audit message: header fields, BOM, then XML valid
    against the DICOM schema (AssertionError naming the schema's complaint otherwise)."""
    match = HEADER.fullmatch(line)
    assert match, f"not an RFC 5424 message: {line[:120]!r}"
    body = match["msg"]
    assert body.startswith(BOM), "an RFC 5424 UTF-8 MSG starts with the BOM"
    root = etree.fromstring(body[len(BOM) :])
    assert SCHEMA.validate(root), f"{SCHEMA.error_log}\n{body[:2000]!r}"
    text = {k: match[k].decode() for k in ("timestamp", "hostname", "app", "procid", "msgid")}
    return Received(int(match["pri"]), xml=root, **text)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class CollectorTls:
    """The collector's certificate and the CA both sides trust."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def issue(cls, authority: CertificateAuthority) -> CollectorTls:
        server = authority.issue("collector")
        return cls(authority.cert, server.cert, server.key)


class Rsyslog:
    """``rsyslogd -n -f CONF -i PIDFILE`` with UDP, and TLS when given certificates."""

    def __init__(
        self, folder: Path, tls: CollectorTls | None = None, tls_port: int | None = None
    ) -> None:
        self.binary = ensure_debian_package("rsyslogd", "rsyslog")
        if tls is not None:
            _ensure_gtls_driver()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.udp_port = free_udp_port()
        self.tls_port = (tls_port or free_port()) if tls is not None else None
        self.received = folder / "received.log"
        self.internal = folder / "rsyslogd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> str:
        lines = [
            f'global(workDirectory="{self.folder}" maxMessageSize="64k"',
            '  processInternalMessages="on"',  # its own messages to our file, not to /dev/log
        ]
        if self.tls is not None:
            lines += [
                '  defaultNetstreamDriver="gtls"',
                f'  defaultNetstreamDriverCAFile="{self.tls.ca}"',
                f'  defaultNetstreamDriverCertFile="{self.tls.cert}"',
                f'  defaultNetstreamDriverKeyFile="{self.tls.key}"',
            ]
        lines += [
            ")",
            'template(name="raw" type="string" string="%rawmsg%\\n")',
            'module(load="imudp")',
            f'input(type="imudp" address="{LOCALHOST}" port="{self.udp_port}" ruleset="audit")',
        ]
        if self.tls is not None:
            lines += [
                'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"'
                ' streamDriver.authMode="x509/certvalid")',
                f'input(type="imtcp" address="{LOCALHOST}" port="{self.tls_port}" ruleset="audit")',
            ]
        lines += [
            'ruleset(name="audit") {',
            f'  action(type="omfile" file="{self.received}" template="raw")',
            "}",
            f'*.* action(type="omfile" file="{self.internal}")',
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> Rsyslog:
        conf = self.folder / "rsyslog.conf"
        conf.write_text(self._config())
        self.proc = subprocess.Popen(
            [self.binary, "-n", "-f", str(conf), "-i", str(self.folder / "rsyslogd.pid")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if not wait_for(self._ready, START_TIMEOUT):
            self.stop()
            pytest.fail(f"rsyslogd did not start:\n{self.log()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"rsyslogd exited with {self.proc.returncode}:\n{self.log()}")
        started = self.internal.exists() and b"start" in self.internal.read_bytes()
        return started and (self.tls_port is None or _listening(self.tls_port))

    def log(self) -> str:
        internal = self.internal.read_text(errors="replace") if self.internal.exists() else ""
        output = b""
        if self.proc is not None and self.proc.poll() is not None and self.proc.stdout:
            output = self.proc.stdout.read()
        return internal + output.decode(errors="replace")

    @property
    def udp_url(self) -> str:
        return f"udp://{LOCALHOST}:{self.udp_port}"

    @property
    def tls_url(self) -> str:
        return f"tls://{LOCALHOST}:{self.tls_port}"

    def messages(self) -> list[Received]:
        if not self.received.exists():
            return []
        return [parse(line) for line in self.received.read_bytes().splitlines() if line]

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        """At least ``count`` messages received within ``timeout`` (all of them returned)."""

        def enough() -> list[Received] | None:
            found = self.messages()
            return found if len(found) >= count else None

        found = wait_for(enough, timeout)
        assert found, f"rsyslog received {len(self.messages())} of {count} messages:\n{self.log()}"
        return found

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Rsyslog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ensure_gtls_driver() -> None:
    """rsyslog's TLS driver is a package of its own (rsyslog-gnutls); install it as root."""
    if not GTLS_DRIVER.exists() and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "rsyslog-gnutls"], check=False, env=env)
    if not GTLS_DRIVER.exists():
        pytest.fail("rsyslog's GnuTLS driver is missing: apt-get install rsyslog-gnutls")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0
