"""The HTTP server inside ``stgcmt scp`` and ``stgcmt agent``: JSON API, dashboard and
Prometheus metrics on aiohttp.

It runs on a thread and an asyncio event loop of its own, and every blocking call it makes
(read-only queries, actions on the service) runs on a small thread pool of its own, so a slow
browser or a scraper never holds up the DICOM engine's loop or its service threads; what it
knows of the DICOM work comes from the service's events (in-memory counters) and read-only
queries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from stgcmt.config.http import HttpConfig
from stgcmt.events import Events
from stgcmt.http import auth, dashboard
from stgcmt.http.agent_api import AgentApi
from stgcmt.http.api import Api
from stgcmt.http.errors import errors_as_json
from stgcmt.http.metrics import CONTENT_TYPE, Metrics
from stgcmt.http.scp_api import ScpApi
from stgcmt.http.timeline import Timeline
from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.scu.agent import Agent
from stgcmt.storage.interfaces import ScpQueries, ScuQueries
from stgcmt.storage.scp_journal import REPORT_PENDING
from stgcmt.storage.scu_journal import PENDING

log = logging.getLogger("stgcmt.http")

START_TIMEOUT = 30.0
POOL_THREADS = 4
TOKEN_FILE = "http-token"


class HttpServer:
    """Start with :meth:`start`, stop with :meth:`stop`. ``make_api`` builds the role's routes
    from the timeline and the pool; ``pending`` feeds the pending gauge, ``unsafe`` (the
    archive's) the unsafe-copies gauge."""

    def __init__(
        self,
        config: HttpConfig,
        events: Events,
        make_api: Callable[[Timeline, ThreadPoolExecutor], Api],
        pending: Callable[[], float],
        token_dir: Path,
        unsafe: Callable[[], float] | None = None,
    ) -> None:
        self.config = with_token(config.checked(), token_dir)
        self.metrics = Metrics(pending, unsafe)
        self.timeline = Timeline()
        self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="stgcmt-http")
        self.api = make_api(self.timeline, self._pool)
        self._unsubscribe = [events.subscribe(self.metrics.observe)]
        self._unsubscribe.append(events.subscribe(self.timeline.observe))
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="stgcmt-http", daemon=True)
        self.port = 0

    def application(self) -> web.Application:
        app = web.Application(
            middlewares=[errors_as_json, auth.middleware(auth.Credentials(self.config))],
            client_max_size=64 * 1024,  # the API takes no bodies; nothing big is ever read
        )
        app.add_routes(self.api.routes())
        app.add_routes([web.get("/metrics", self._metrics)])
        app.add_routes(dashboard.routes(self.api.role))
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(self._pool, self.metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> HttpServer:
        """Listen, or raise OSError (address in use, certificate unreadable) at once."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise OSError(f"HTTP server did not start within {START_TIMEOUT:.0f} s")
        if self._failure is not None:
            self._close()
            raise OSError(f"cannot start the HTTP server: {self._failure}") from self._failure
        scheme = "https" if self.config.https else "http"
        host, _ = self.config.address()
        log.info("HTTP API, dashboard and /metrics on %s://%s:%d/", scheme, host, self.port)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._close()

    def _close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            runner = loop.run_until_complete(self._listen())
        except Exception as exc:  # reported to start()
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    async def _listen(self) -> web.AppRunner:
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self.config.address()
        site = web.TCPSite(runner, host, port, ssl_context=server_ssl_context(self.config))
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        return runner


def server_ssl_context(config: HttpConfig) -> ssl.SSLContext | None:
    """HTTPS with the DICOM TLS options: our certificate and key, and with ``ca`` the bundle
    client certificates must chain to (required with ``require_client_cert``)."""
    if not config.https:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert config.cert is not None
    context.load_cert_chain(config.cert, config.key)
    if config.ca is not None:
        context.load_verify_locations(config.ca)
        context.verify_mode = ssl.CERT_REQUIRED if config.require_client_cert else ssl.CERT_OPTIONAL
    return context


def with_token(config: HttpConfig, token_dir: Path) -> HttpConfig:
    """Without credentials in ``[http]`` (allowed on loopback only) the API still needs a
    token: a random one, written to ``token_dir/http-token`` readable by our user alone."""
    if config.has_credentials:
        return config
    token = secrets.token_urlsafe(32)
    path = token_dir / TOKEN_FILE
    token_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    log.info("no token in [http]: the API's bearer token is in %s (readable by us only)", path)
    return replace(config, token=token)


def serve_scp(scp: StorageCommitmentSCP, config: HttpConfig) -> HttpServer:
    """The archive's HTTP server (not yet started); its gauges: reports pending, unsafe
    copies."""
    return HttpServer(
        config,
        scp.events,
        lambda timeline, pool: ScpApi(scp, timeline, pool),
        _count_in_state(scp.queries, REPORT_PENDING),
        scp.config.data_dir,
        _count_unsafe(scp.queries),
    )


def serve_agent(agent: Agent, config: HttpConfig) -> HttpServer:
    """The agent's HTTP server (not yet started); its gauge: transactions pending."""
    return HttpServer(
        config,
        agent.events,
        lambda timeline, pool: AgentApi(agent, timeline, pool),
        _count_in_state(agent.queries, PENDING),
        Path(agent.journal.path).parent,
    )


def _count_unsafe(queries: ScpQueries) -> Callable[[], float]:
    """The total of ``GET /api/v1/instances?unsafe=true`` (an index lookup of the non-durable
    rows, not a scan of every instance)."""

    def count() -> float:
        return float(queries.find_instances(unsafe=True, limit=0)["total"])

    return count


def _count_in_state(queries: ScpQueries | ScuQueries, state: str) -> Callable[[], float]:
    def count() -> float:
        return float(queries.status(0)["transactions_by_state"].get(state, 0))

    return count
