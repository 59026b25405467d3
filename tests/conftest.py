"""Shared fixtures: free ports, synthetic DICOM files, our SCP in-process, real peers.

Everything talks over real TCP sockets on 127.0.0.1; every fixture stops what it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stgcmt import ul as api
from stgcmt.config import ScpConfig
from stgcmt.scp.service import StorageCommitmentSCP
from stgcmt.ul.seam import Handlers

from support.common import (
    FAST_RETRY,
    LOCALHOST,
    write_instances,
)
from support.engine import FAST


@pytest.fixture
def instances(tmp_path: Path) -> Callable[..., list[Path]]:
    return lambda count=3, **kw: write_instances(tmp_path / "outbox", count, **kw)


@pytest.fixture
def scp_factory(tmp_path: Path) -> Iterator[Callable[..., StorageCommitmentSCP]]:
    """Start our SCP in-process on a free port; stopped after the test."""
    started: list[StorageCommitmentSCP] = []

    def start(**overrides) -> StorageCommitmentSCP:
        config = replace(
            ScpConfig(bind=LOCALHOST, port=0, data_dir=tmp_path / "scp-data", retry=FAST_RETRY),
            **overrides,
        )
        scp = StorageCommitmentSCP(config).start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def scu_journal(tmp_path: Path):
    """An SCU journal in the test's directory, closed afterwards."""
    from stgcmt.storage.scu_journal import ScuJournal

    journal = ScuJournal(tmp_path / "scu-journal.sqlite")
    yield journal
    journal.close()


@pytest.fixture
def archive_factory():
    """Start plain pynetdicom archives (tests/pynetdicom_archive.py); stopped after the test."""
    from support.pynetdicom_archive import Archive

    started: list[Archive] = []

    def start(**kwargs) -> tuple[Archive, int]:
        archive = Archive(**kwargs)
        port = archive.start()
        started.append(archive)
        return archive, port

    yield start
    for archive in started:
        archive.stop()


@pytest.fixture
def engine_server() -> Iterator[Callable[..., api.Server]]:
    started: list[api.Server] = []

    def start(handlers: Handlers | None = None, aet: str = "ENGINE", **kwargs) -> api.Server:
        kwargs.setdefault("timeouts", FAST)
        server = api.listen(aet, LOCALHOST, 0, handlers or Handlers(), **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def postgres_cluster():
    """A private PostgreSQL server for the session (support/postgres.py), stopped at the end."""
    from support.postgres import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster) -> Iterator[str]:
    """A fresh, empty database for one test (Unix-socket URL); dropped afterwards."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def scp_backend(request, tmp_path: Path):
    """The SCP's storage on each backend in turn (support/backends.py); closed afterwards."""
    from support.backends import Backend

    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    backend = Backend(request.param, tmp_path / "scp-data", url)
    yield backend
    backend.close()
