"""HTTP helpers for the API, metrics and dashboard tests: a small client over real HTTP
(urllib, nothing of ours), a running SCP or agent with its HTTP server, and Prometheus text
parsed with prometheus-client's own parser."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread

from stgcmt.config import ScpConfig
from stgcmt.config.http import HttpConfig
from stgcmt.http import HttpServer, serve_agent, serve_scp
from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.scu.agent import Agent

from support.common import FAST_RETRY, LOCALHOST

TOKEN = "test-token-4b1d"
TIMEOUT = 15


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class Client:
    """Requests to one server; ``token`` None sends no Authorization header."""

    def __init__(self, port: int, token: str | None = TOKEN, scheme: str = "http") -> None:
        self.base = f"{scheme}://{LOCALHOST}:{port}"
        self.token = token

    def request(
        self, method: str, path: str, authorization: str | None = None, context: Any = None
    ) -> Answer:
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        elif self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), error.read())

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Answer:
        return self.request("POST", path, **kw)

    def ok(self, path: str) -> Any:
        """GET that must succeed; its JSON."""
        answer = self.get(path)
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def dataset_size(path: Path) -> int:
    """What a C-STORE of this Part 10 file carries: the file less preamble and File Meta."""
    meta_length = dcmread(path, stop_before_pixels=True).file_meta.FileMetaInformationGroupLength
    return path.stat().st_size - (128 + 4 + 12 + meta_length)


def http_config(**overrides: Any) -> HttpConfig:
    return replace(HttpConfig(listen=f"{LOCALHOST}:0", token=TOKEN), **overrides)


@contextmanager
def scp_with_http(
    data_dir: Path, http: HttpConfig | None = None, **config: Any
) -> Iterator[tuple[StorageCommitmentSCP, HttpServer]]:
    """Our SCP on a free port with its HTTP server on another; both stopped afterwards."""
    scp_config = ScpConfig(bind=LOCALHOST, port=0, data_dir=data_dir, retry=FAST_RETRY)
    scp = StorageCommitmentSCP(replace(scp_config, **config)).start()
    try:
        web = serve_scp(scp, http or http_config()).start()
    except BaseException:
        scp.stop()
        raise
    try:
        yield scp, web
    finally:
        web.stop()
        scp.stop()


@contextmanager
def agent_with_http(
    journal: Path, aet: str, http: HttpConfig | None = None
) -> Iterator[tuple[Agent, HttpServer]]:
    """The SCU agent on a free port with its HTTP server; both stopped afterwards."""
    agent = Agent(journal, aet, LOCALHOST, 0).start()
    try:
        web = serve_agent(agent, http or http_config()).start()
    except BaseException:
        agent.stop()
        raise
    try:
        yield agent, web
    finally:
        web.stop()
        agent.stop()
