"""What the SCP's and the agent's JSON APIs share: reading and checking query parameters
(unknown or malformed ones are a 400, never ignored), statuses as hex plus words, running the
blocking journal and network calls off the event loop, and the routes both have
(``/healthz``, ``/api/v1/status``, ``/api/v1/timeline``, ``/api/v1/openapi.json``)."""

from __future__ import annotations

import asyncio
import datetime
import math
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from stgcmt import __version__
from stgcmt.config import ConfigError, validate_aet
from stgcmt.dicom.status import status_words
from stgcmt.dicom.uids import is_valid_uid
from stgcmt.http.errors import ApiError, bad_request
from stgcmt.http.openapi import document
from stgcmt.http.timeline import MINUTES, Timeline

T = TypeVar("T")

MAX_PAGE = 500
MAX_TEXT = 64
"""Longest Patient ID (LO is 64 characters) or other free-text filter accepted."""
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")


def status_of(code: int | None) -> dict[str, Any] | None:
    """A DIMSE status or Failure Reason as the API shows it everywhere."""
    if code is None:
        return None
    return {"code": code, "hex": f"0x{code:04X}", "words": status_words(code)}


class Query:
    """The query string of one request, checked parameter by parameter; :meth:`done` refuses
    any parameter nobody asked for (a misspelt filter must not silently match everything)."""

    def __init__(self, request: web.Request) -> None:
        self._params = request.query
        self._used: set[str] = set()

    def _get(self, name: str) -> str | None:
        self._used.add(name)
        values = self._params.getall(name, [])
        if len(values) > 1:
            raise bad_request(f"{name}: given {len(values)} times, give it once")
        return values[0] if values else None

    def choice(self, name: str, choices: Iterable[str]) -> str | None:
        value = self._get(name)
        allowed = list(choices)
        if value is not None and value not in allowed:
            raise bad_request(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def uid(self, name: str) -> str | None:
        value = self._get(name)
        if value is not None and not is_valid_uid(value):
            raise bad_request(f"{name}: {value[:80]!r} is not a UID (digits and dots, at most 64)")
        return value

    def aet(self, name: str) -> str | None:
        value = self._get(name)
        if value is None:
            return None
        try:
            return validate_aet(value)
        except ConfigError as exc:
            raise bad_request(f"{name}: {exc}") from None

    def text(self, name: str) -> str | None:
        value = self._get(name)
        if value is not None and not 0 < len(value) <= MAX_TEXT:
            raise bad_request(f"{name}: expected 1 to {MAX_TEXT} characters")
        return value

    def time(self, name: str) -> float | None:
        """Epoch seconds, or an ISO 8601 date/time (UTC unless it names its offset)."""
        value = self._get(name)
        if value is None:
            return None
        try:
            seconds = float(value) if not _ISO.fullmatch(value) else _iso(value)
            if not math.isfinite(seconds):
                raise ValueError(value)
            return seconds
        except (ValueError, OverflowError):
            raise bad_request(
                f"{name}: {value[:80]!r} is neither epoch seconds nor an ISO 8601 time"
                " (e.g. 2026-12-01T10:00:00Z)"
            ) from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name)
        if value is None:
            return default
        if not _is_number(value) or not low <= int(value) <= high:
            raise bad_request(f"{name}: expected an integer from {low} to {high}, got {value!r}")
        return int(value)

    def page(self) -> tuple[int, int]:
        """``limit`` (1..500, default 50) and ``offset``."""
        return self.integer("limit", 50, 1, MAX_PAGE), self.integer("offset", 0, 0, 10**12)

    def done(self) -> None:
        unknown = sorted(set(self._params) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise bad_request(f"unknown parameter {unknown[0]!r} (known here: {known})")


def _is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _iso(value: str) -> float:
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def path_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not _is_number(text) or len(text) > 18:
        raise bad_request(f"transaction id {text[:40]!r} is not a number (the # in the list)")
    return int(text)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not-found", f"{what} does not exist")


Filters = Callable[[Query], dict[str, Any]]
"""Reads a search's filters from the query string (checked)."""
Search = Callable[..., dict[str, Any]]
"""A query method answering ``{"total": N, "items": [...]}`` for filters, limit and offset."""


class Api:
    """The routes both services have. ``role`` is ``scp`` or ``agent``; ``queries`` their
    read-only views (ScpQueries or ScuQueries); blocking calls (the journal, the network) run
    on ``pool``, never on the event loop."""

    role = ""

    def __init__(
        self, aet: str, queries: Any, timeline: Timeline, pool: ThreadPoolExecutor
    ) -> None:
        self.aet = aet
        self.queries = queries
        self.timeline = timeline
        self.pool = pool

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, call, *args)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/api/v1/status", self.status),
            web.get("/api/v1/timeline", self.timeline_view),
            web.get("/api/v1/openapi.json", self.openapi),
        ]

    async def status(self, request: web.Request) -> web.Response:
        """Counts by state (and, for the archive, of instances)."""
        Query(request).done()
        status = await self.run(self.queries.status, 0)
        del status["transactions"]
        return web.json_response(status | {"role": self.role, "aet": self.aet})

    async def search(
        self,
        request: web.Request,
        filters: Filters,
        find: Search,
        shape: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    ) -> web.Response:
        """A paged search: filters from the query string, ``find`` on the pool, each row
        through ``shape``."""
        query = Query(request)
        given = filters(query)
        limit, offset = query.page()
        query.done()
        page = await self.run(lambda: find(**given, limit=limit, offset=offset))
        items = [shape(row) for row in page["items"]]
        return web.json_response(page | {"items": items, "limit": limit, "offset": offset})

    async def healthz(self, request: web.Request) -> web.Response:
        Query(request).done()
        return web.json_response(
            {"status": "ok", "role": self.role, "aet": self.aet, "version": __version__}
        )

    async def timeline_view(self, request: web.Request) -> web.Response:
        query = Query(request)
        minutes = query.integer("minutes", 60, 1, MINUTES)
        query.done()
        return web.json_response({"minutes": self.timeline.minutes(minutes)})

    async def openapi(self, request: web.Request) -> web.Response:
        Query(request).done()
        return web.json_response(document(self.role))
