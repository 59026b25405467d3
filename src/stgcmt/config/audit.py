"""The ``[audit]`` table: where the IHE ATNA audit trail (DICOM PS3.15 Annex A.5 messages) goes.

A collector is written as a URL, ``udp://HOST:PORT`` (RFC 5426) or ``tls://HOST:PORT``
(RFC 5425); the port defaults to the one each RFC assigns (514, 6514). ``file`` writes the same
RFC 5424 lines to a local file as well (or instead). Nothing configured: no audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

SyslogTransport = Literal["udp", "tls"]
DEFAULT_PORTS: dict[str, int] = {"udp": 514, "tls": 6514}
"""RFC 5426 (syslog over UDP) and RFC 5425 (syslog over TLS) assign these ports."""


def _config_error(message: str) -> ValueError:
    # config.model imports this module for its [audit] field, so its ConfigError is
    # imported when an error is raised, not when this module loads.
    from stgcmt.config.model import ConfigError

    return ConfigError(message)


@dataclass(frozen=True)
class SyslogCollector:
    """Where audit messages are sent: the transport and the collector's address."""

    transport: SyslogTransport
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SyslogCollector:
        """``udp://HOST[:PORT]`` or ``tls://HOST[:PORT]``; IPv6 hosts in brackets."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise _config_error(
                f"syslog collector {url!r}: write udp://HOST:PORT or tls://HOST:PORT"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise _config_error(f"syslog collector {url!r}: only a host and a port, no path")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise _config_error(f"syslog collector {url!r}: the port is not 1 to 65535") from None
        if not parts.hostname:
            raise _config_error(f"syslog collector {url!r}: no host")
        return cls("udp" if scheme == "udp" else "tls", parts.hostname, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def syslog_url(value: str) -> str:
    """The configuration check of ``[audit] syslog`` (``--audit``): a collector URL."""
    return str(SyslogCollector.parse(value))


@dataclass(frozen=True)
class AuditConfig:
    """``[audit]``: a syslog collector and/or a local file, and how we name ourselves."""

    syslog: str | None = None
    """``udp://HOST:PORT`` or ``tls://HOST:PORT`` (``--audit``)."""
    ca: Path | None = None
    """For ``tls://``: the CA bundle the collector's certificate must chain to (else the
    system's trust store)."""
    cert: Path | None = None
    """For ``tls://``: our client certificate, if the collector asks for one (with ``key``)."""
    key: Path | None = None
    file: Path | None = None
    """A local file the same RFC 5424 messages are appended to, one per line."""
    source_id: str | None = None
    """AuditSourceID (PS3.15 A.5.2.3) naming this system in every message; default: the host
    name."""

    @property
    def enabled(self) -> bool:
        return self.syslog is not None or self.file is not None

    @property
    def collector(self) -> SyslogCollector | None:
        return SyslogCollector.parse(self.syslog) if self.syslog is not None else None

    def checked(self, where: str = "[audit]") -> AuditConfig:
        """Refuse what could only fail at the first message: TLS files without a TLS
        collector, half a key pair, missing files."""
        collector = self.collector
        tls_files = {"ca": self.ca, "cert": self.cert, "key": self.key}
        given = [name for name, path in tls_files.items() if path is not None]
        if given and (collector is None or collector.transport != "tls"):
            raise _config_error(f"{where} {given[0]}: only for a tls:// syslog collector")
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise _config_error(f"{where} {missing}: give both a client certificate and its key")
        for name in given:
            path = tls_files[name]
            if path is not None and not Path(path).is_file():
                raise _config_error(f"{where} {name}: no such file {path}")
        return self
