"""The credential checks of the HTTP server: bearer token and HTTP basic, compared whole."""

from __future__ import annotations

import base64

import pytest

from stgcmt.config.http import HttpConfig
from stgcmt.http.auth import Credentials


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.fixture
def credentials() -> Credentials:
    return Credentials(HttpConfig(listen="127.0.0.1:1", token="t0k", username="u", password="p:w"))


@pytest.mark.parametrize(
    "header",
    ["Bearer t0k", "bearer t0k", "Bearer  t0k ", basic("u:p:w"), "BASIC " + basic("u:p:w")[6:]],
)
def test_right_credentials(credentials, header):
    assert credentials.allows(header)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t0k",
        "Bearer",
        "Bearer t0",
        "Bearer t0kk",
        "Bearer T0K",
        "Token t0k",
        basic("u:p"),
        basic("u:p:wx"),
        basic("U:p:w"),
        basic(":p:w"),
        basic("u"),
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    ],
)
def test_wrong_credentials(credentials, header):
    assert not credentials.allows(header)


def test_basic_is_refused_when_only_a_token_is_configured():
    only_token = Credentials(HttpConfig(listen="127.0.0.1:1", token="t0k"))
    assert not only_token.allows(basic(":"))
    assert not only_token.allows(basic("t0k:t0k"))


def test_metrics_open_unless_a_metrics_token_is_set(credentials):
    assert credentials.metrics_allowed("")
    guarded = Credentials(HttpConfig(listen="127.0.0.1:1", token="t0k", metrics_token="m"))
    assert not guarded.metrics_allowed("")
    assert not guarded.metrics_allowed("Bearer t0k")
    assert guarded.metrics_allowed("Bearer m")


@pytest.mark.parametrize(
    ("path", "needed"),
    [
        ("/healthz", False),
        ("/", False),
        ("/static/dashboard.js", False),
        ("/metrics", False),
        ("/api/v1/status", True),
        ("/api/v1/transactions/1/retry", True),
        ("/healthz/../api/v1/status", True),
        ("/staticx", True),
    ],
)
def test_what_needs_credentials(path, needed):
    assert Credentials.needed(path) is needed
