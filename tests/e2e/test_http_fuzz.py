"""Hostile query strings against the running API: whatever the parameters' names and values
(known or not, repeated, Unicode, long, control characters), every answer is 200 or a JSON
400/404, never a 500, and the server keeps serving."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.http import Client, scp_with_http

NAMES = [
    "state",
    "calling_aet",
    "since",
    "until",
    "transaction_uid",
    "patient_id",
    "study_uid",
    "limit",
    "offset",
    "sop_instance_uid",
    "series_uid",
    "refs_limit",
    "refs_offset",
    "minutes",
]
PATHS = [
    "/api/v1/transactions",
    "/api/v1/instances",
    "/api/v1/transactions/1",
    "/api/v1/timeline",
    "/api/v1/peers",
    "/api/v1/status",
]
SPECIAL = [
    "",
    "0",
    "-1",
    "1e400",
    "nan",
    "\u00b2",
    "\u0663",
    "1.2.3",
    "delivered",
    "9" * 30,
    "2026-12-01T10:00:00Z",
    "2026-13-01",
    "A" * 16,
    "%00",
    "\x00",
    " 1",
    "0x10",
]
VALUES = st.one_of(st.sampled_from(SPECIAL), st.text(max_size=80))
NAME = st.one_of(st.sampled_from(NAMES), st.text(max_size=20))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with scp_with_http(folder / "scp") as (_, web):
        yield Client(web.port)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    params=st.lists(
        st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=20)), VALUES), max_size=5
    ),
)
def test_any_query_gets_an_answer_not_a_crash(client, path, params):
    query = urllib.parse.urlencode(params)
    answer = client.get(f"{path}?{query}" if query else path)
    assert answer.status in (200, 400, 404), (path, params, answer.status, answer.body[:300])
    if answer.status != 200:
        assert answer.json["error"] in ("bad-request", "not-found")
        assert answer.json["detail"]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(segment=st.text(min_size=1, max_size=40))
def test_any_transaction_id_gets_an_answer(client, segment):
    quoted = urllib.parse.quote(segment, safe="")
    for method in ("GET", "POST"):
        suffix = "" if method == "GET" else "/retry"
        answer = client.request(method, f"/api/v1/transactions/{quoted}{suffix}")
        assert answer.status in (400, 404), (segment, method, answer.status, answer.body[:300])
