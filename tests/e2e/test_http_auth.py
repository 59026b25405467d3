"""Who may use the HTTP server, over real HTTP(S): only /healthz (and /metrics, unless it has
a token of its own) without credentials; the API answers 401 to no token and to a wrong one,
bearer or basic; HTTPS with the DICOM TLS certificate options; and ``stgcmt scp --http``
refuses a non-loopback address without a token, or makes a random one when on loopback."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from support.common import LOCALHOST, PYTHON, free_port, wait_for
from support.http import TOKEN, Client, basic, http_config, scp_with_http
from support.tls_certs import CertificateAuthority

PROTECTED = [
    "/api/v1/status",
    "/api/v1/transactions",
    "/api/v1/transactions/1",
    "/api/v1/instances",
    "/api/v1/peers",
    "/api/v1/timeline",
    "/api/v1/openapi.json",
]


@pytest.fixture
def server(tmp_path: Path):
    with scp_with_http(tmp_path / "scp", http_config(username="admin", password="pw-9")) as (
        _,
        web,
    ):
        yield web


@pytest.mark.parametrize("path", PROTECTED)
def test_api_needs_valid_credentials(server, path):
    client = Client(server.port, token=None)
    wrong = [
        None,  # no Authorization header at all
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        TOKEN,  # no scheme
        basic("admin", "wrong"),
        basic("root", "pw-9"),
        "Basic !!notbase64",
    ]
    for authorization in wrong:
        answer = client.get(path, authorization=authorization)
        assert answer.status == 401, (path, authorization, answer.body)
        assert answer.json["error"] == "unauthorized"
        assert "Bearer" in answer.headers["WWW-Authenticate"]
    assert client.get(path, authorization=f"Bearer {TOKEN}").status in (200, 404)
    assert client.get(path, authorization=basic("admin", "pw-9")).status in (200, 404)


def test_actions_need_credentials_too(server):
    answer = Client(server.port, token="guess").post("/api/v1/transactions/1/retry")
    assert answer.status == 401


def test_healthz_dashboard_and_metrics_are_open(server):
    client = Client(server.port, token=None)
    health = client.get("/healthz")
    assert health.status == 200 and health.json["status"] == "ok"
    assert health.json["role"] == "scp" and health.json["aet"] == "STGCMT_SCP"
    assert client.get("/metrics").status == 200
    page = client.get("/")
    assert page.status == 200 and b"Sign in" in page.body  # the page holds no data
    assert client.get("/static/dashboard.js").status == 200


def test_metrics_token_guards_metrics_only(tmp_path):
    http = http_config(metrics_token="scrape-me")
    with scp_with_http(tmp_path / "scp", http) as (_, web):
        client = Client(web.port, token=None)
        assert client.get("/metrics").status == 401
        assert client.get("/metrics", authorization=f"Bearer {TOKEN}").status == 401
        assert client.get("/metrics", authorization="Bearer scrape-me").status == 200
        assert client.get("/api/v1/status", authorization="Bearer scrape-me").status == 401


def test_https_with_the_tls_certificate_options(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("localhost")
    http = http_config(cert=server.cert, key=server.key)
    with scp_with_http(tmp_path / "scp", http) as (_, web):
        context = ssl.create_default_context(cafile=str(ca.cert))
        context.check_hostname = False
        client = Client(web.port, scheme="https")
        assert client.get("/api/v1/status", context=context).status == 200
        assert client.get("/api/v1/status", authorization="", context=context).status == 401
        with pytest.raises(OSError):  # a client that does not trust the CA gets nowhere
            client.get("/healthz", context=ssl.create_default_context())


def _scp(tmp_path: Path, *args: str) -> subprocess.Popen:
    log = open(tmp_path / "scp.log", "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [
            PYTHON,
            "-m",
            "stgcmt",
            "scp",
            "--bind",
            LOCALHOST,
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
            *args,
        ],
        stdout=log,
        stderr=log,
        cwd=tmp_path,
    )


def test_cli_refuses_a_public_address_without_a_token(tmp_path):
    proc = _scp(tmp_path, "--http", f"0.0.0.0:{free_port()}")
    assert proc.wait(timeout=30) != 0
    said = (tmp_path / "scp.log").read_text()
    assert "refusing to serve the HTTP API on 0.0.0.0" in said
    assert "token" in said and "127.0.0.1" in said


def _healthy(port: int) -> bool:
    try:
        return Client(port, token=None).get("/healthz").status == 200
    except OSError:  # not listening yet
        return False


def test_cli_on_loopback_makes_a_random_token_only_its_user_can_read(tmp_path):
    port = free_port()
    proc = _scp(tmp_path, "--http", f"{LOCALHOST}:{port}")
    try:
        token_file = tmp_path / "data" / "http-token"
        assert wait_for(lambda: token_file.exists() and _healthy(port), 30), (
            tmp_path / "scp.log"
        ).read_text()
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert Client(port, token=token).get("/api/v1/status").status == 200
        assert Client(port, token=None).get("/api/v1/status").status == 401
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_cli_says_when_the_http_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        proc = _scp(tmp_path, "--http", f"{LOCALHOST}:{taken.getsockname()[1]}")
        assert proc.wait(timeout=30) != 0
    said = (tmp_path / "scp.log").read_text()
    assert "cannot start the SCP: cannot start the HTTP server" in said
    assert "address already in use" in said.lower()
