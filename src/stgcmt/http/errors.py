"""Every error of the HTTP server as JSON, ``{"error": ..., "detail": ...}``, with the right
status: 400 bad input, 401 no/wrong credentials, 404 unknown resource, 405 wrong method, 409 an
action the transaction's state does not allow, 502 the peer cannot be reached, 503 storage
failing, 500 a bug (logged with its traceback, never shown)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("stgcmt.http")


class ApiError(Exception):
    """An answer other than success: ``status``, a short ``error`` code and a sentence."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad-request", detail)


def json_error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.error, exc.detail)
    except web.HTTPException as exc:  # aiohttp's own: unknown route (404), wrong method (405)
        if exc.status < 400:
            raise
        detail = {
            404: f"no such resource {request.path} (see /api/v1/openapi.json)",
            405: f"{request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        response = json_error(exc.status, exc.reason.lower().replace(" ", "-"), detail)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return json_error(500, "internal-error", "the server failed; its log says why")
