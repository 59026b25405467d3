"""The ``[http]`` table: the HTTP API, dashboard and metrics of ``stgcmt scp`` / ``agent``.

The API carries patient identifiers, so the defaults are closed: no server unless ``listen``
(``--http HOST:PORT``) is set, and a server on anything but a loopback address refuses to start
without credentials (a bearer ``token``, or ``username`` + ``password`` for HTTP basic). HTTPS
takes the same certificate options as DICOM TLS (``cert``, ``key``, and ``ca`` with
``require_client_cert`` for client certificates).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HTTP_BIND = "127.0.0.1"


@dataclass(frozen=True)
class HttpConfig:
    listen: str | None = None
    """``HOST:PORT`` (``[v6]:PORT``; ``:PORT`` or ``PORT`` alone binds 127.0.0.1); unset: no
    HTTP server."""
    token: str | None = None
    """Bearer token for everything but ``/healthz`` (and ``/metrics``, see metrics_token)."""
    username: str | None = None
    password: str | None = None
    """HTTP basic credentials, instead of or beside the token."""
    metrics_token: str | None = None
    """If set, ``/metrics`` needs this bearer token (Prometheus ``authorization``); else it is
    open, as scrapers expect."""
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return self.listen is not None

    @property
    def https(self) -> bool:
        return self.cert is not None

    @property
    def has_credentials(self) -> bool:
        return bool(self.token) or bool(self.username and self.password)

    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port); raises ConfigError naming what is wrong."""
        from stgcmt.config.model import ConfigError

        text = (self.listen or "").strip()
        if text.isascii() and text.isdigit():
            host, port = DEFAULT_HTTP_BIND, text
        elif text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = text.rpartition(":")
        host = host or DEFAULT_HTTP_BIND
        if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            raise ConfigError(
                f"http listen: expected HOST:PORT (e.g. 127.0.0.1:8080), got {self.listen!r}"
            )
        return host, int(port)

    def checked(self, where: str = "[http]") -> HttpConfig:
        """Refuse what could only fail later or expose patient data: a bad address, half a
        credential or certificate pair, and credentials missing on a non-loopback address."""
        from stgcmt.config.model import ConfigError, TlsConfig

        if not self.enabled:
            return self
        host, port = self.address()
        if bool(self.username) != bool(self.password):
            raise ConfigError(f"{where} username/password: give both (HTTP basic), or a token")
        TlsConfig(self.cert, self.key, self.ca, self.require_client_cert).checked(where)
        if self.ca is not None and self.cert is None:
            raise ConfigError(f"{where} ca: client certificates need HTTPS (cert and key)")
        if not self.has_credentials and not is_loopback(host):
            raise ConfigError(
                f"{where}: refusing to serve the HTTP API on {host}:{port} without credentials:"
                ' the API shows patient identifiers. Set a token (token = "..." in [http]) or'
                " username and password, or listen on 127.0.0.1"
            )
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` only ever reaches this machine (``localhost`` or a loopback IP)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
