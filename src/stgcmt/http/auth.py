"""Who may use the HTTP server: a bearer token or HTTP basic credentials from ``[http]``.

Public without credentials: ``/healthz`` (for load balancers and systemd checks), the
dashboard's page and its static assets (they hold no data: the page asks for the token and
sends it with every API call), and ``/metrics`` unless a ``metrics_token`` is set. Everything
else, ``/api/...`` above all (patient identifiers), answers 401 without valid credentials.
Without credentials in ``[http]`` (loopback only) the server makes a random token at start and
writes it to a file only its user can read (see :mod:`stgcmt.http.app`). Comparisons are
constant-time (:func:`hmac.compare_digest`), so response times do not leak how
much of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from stgcmt.config.http import HttpConfig
from stgcmt.http.errors import json_error

PUBLIC_PATHS = frozenset({"/healthz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
REALM = 'Bearer realm="stgcmt", Basic realm="stgcmt"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


class Credentials:
    """The checks of one server's ``[http]`` settings."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config

    def allows(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries the token or the basic credentials."""
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return _same(value, self.config.token)
        if scheme.lower() == "basic" and self.config.username and self.config.password:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # both compared, always: no early exit that tells a right user name apart
            right_user = _same(user, self.config.username)
            right_password = _same(password, self.config.password)
            return right_user and right_password
        return False

    def metrics_allowed(self, authorization: str) -> bool:
        if self.config.metrics_token is None:
            return True
        scheme, _, value = authorization.strip().partition(" ")
        return scheme.lower() == "bearer" and _same(value.strip(), self.config.metrics_token)

    @staticmethod
    def needed(path: str) -> bool:
        """Whether ``path`` needs credentials (``/metrics`` has its own rule)."""
        return not (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or path == "/metrics")


def middleware(credentials: Credentials) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        if request.path == "/metrics" and not credentials.metrics_allowed(authorization):
            return _unauthorized("/metrics needs the metrics token (Authorization: Bearer ...)")
        if credentials.needed(request.path) and not credentials.allows(authorization):
            why = "wrong credentials" if authorization else "no credentials"
            return _unauthorized(
                f"{why}: send Authorization: Bearer <token> (the [http] token) or HTTP basic"
            )
        return await handler(request)

    return authenticate


def _unauthorized(detail: str) -> web.Response:
    response = json_error(401, "unauthorized", detail)
    response.headers["WWW-Authenticate"] = REALM
    return response
