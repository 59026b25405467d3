"""The web dashboard: one page and its script and style sheet, shipped in the package (no CDN:
it works on an archive with no internet). The page holds no data; its script asks for the
token, keeps it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` with
every API call, so closing the tab forgets it."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    # only our own files; the script builds every element itself (no inline handlers)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _read(folder: str, name: str) -> bytes:
    return resources.files("stgcmt.http").joinpath(folder, name).read_bytes()


def routes(role: str) -> list[web.RouteDef]:
    page = _read("templates", "index.html").replace(b"{{role}}", role.encode())
    static = {name: _read("static", name) for name in ("dashboard.js", "dashboard.css")}

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", headers=SECURITY_HEADERS)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in static:
            raise web.HTTPNotFound()
        kind = STATIC_TYPES[name[name.rindex(".") :]]
        return web.Response(body=static[name], content_type=kind, headers=SECURITY_HEADERS)

    return [web.get("/", index), web.get("/static/{name}", asset)]
