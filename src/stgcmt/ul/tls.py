"""DICOM TLS: the SSL contexts, and the server side's own handshake (:class:`TlsGate`)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

from stgcmt.config import TlsConfig
from stgcmt.ul.registry import Registry
from stgcmt.ul.tasks import spawn

log = logging.getLogger("stgcmt.engine")


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS for associations we accept; with ``require_client_cert`` a peer without a
    certificate from our CA fails the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert is not None:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.ca is not None:
        context.load_verify_locations(str(tls.ca))
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS for associations we open: the peer must present a certificate from our CA (when one
    is given); our own certificate is offered for peers that require client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if tls.ca is not None:
        context.load_verify_locations(str(tls.ca))
    else:
        context.verify_mode = ssl.CERT_NONE
    if tls.cert is not None:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    return context


def tls_reason(exc: BaseException) -> str:
    """A failed TLS handshake in words, without OpenSSL's bracketed codes and source lines."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        text = text.split("] ", 1)[-1]
        return text.split(" (_ssl.c", 1)[0].lower()
    if isinstance(exc, TimeoutError):
        return "no handshake within the timeout"
    if isinstance(exc, ConnectionError):
        return "the peer closed the connection (does it trust our certificate?)"
    return str(exc) or type(exc).__name__


def tls_failed(remote: object, exc: BaseException) -> str:
    """A failed TLS handshake, with its reason (e.g. the certificate that did not verify)."""
    return f"TLS handshake with {remote} failed: {tls_reason(exc)}"


class TlsGate(asyncio.Protocol):
    """A server connection before its TLS handshake: we run the handshake ourselves
    (``loop.start_tls``) so that a failed one is logged with the peer's address and the reason
    (asyncio's server-side TLS drops them silently), then hand the connection to the
    association. It holds a pending slot meanwhile, like a connection that has not associated."""

    def __init__(
        self,
        association: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        timeout: float,
        registry: Registry,
        failed: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self._association = association
        self._failed = failed
        self._context = context
        self._timeout = timeout
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self.address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's)
        transport = cast(asyncio.Transport, transport)
        transport.pause_reading()  # the handshake's bytes are for the TLS protocol, not us
        self._transport = transport
        peername = transport.get_extra_info("peername") or ("", 0)
        self.address = (str(peername[0]), int(peername[1]))
        self._registry.add_pending(self)
        spawn(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        upper = self._association()
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                transport,
                upper,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._timeout,
            )
        except Exception as exc:
            host, port = self.address
            log.warning("TLS handshake with %s:%d failed: %s", host, port, tls_reason(exc))
            if self._failed is not None:
                self._failed(host, port, f"TLS handshake failed: {tls_reason(exc)}")
            transport.close()
            return
        finally:
            self._registry.discard(self)
        if secure is None or secure.is_closing():
            return
        upper.connection_made(secure)

    def drop(self, why: str) -> None:
        host, port = self.address
        log.warning("connection from %s:%d: TLS handshake not finished, %s", host, port, why)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)  # lost before the handshake took the transport over
