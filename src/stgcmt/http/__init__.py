"""The HTTP server of ``stgcmt scp`` and ``stgcmt agent``: JSON API (``/api/v1``, OpenAPI at
``/api/v1/openapi.json``), the web dashboard (``/``), Prometheus metrics (``/metrics``) and
``/healthz``, on aiohttp, on a thread and event loop of its own (:mod:`.app`)."""

from stgcmt.http.app import HttpServer, serve_agent, serve_scp

__all__ = ["HttpServer", "serve_agent", "serve_scp"]
