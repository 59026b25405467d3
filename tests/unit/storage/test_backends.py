"""Choosing the backend (storage/backends.py) and the PostgreSQL plumbing around it: SQLite
never loads the driver, URLs are shown without passwords, the schema is migrated once even by
nodes starting together, a newer schema or an unreachable server stops the start clearly."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from stgcmt.config import DatabaseConfig
from stgcmt.storage.backends import DatabaseUnavailable, node_name, open_scp_storage
from stgcmt.storage.postgres.connection import PgDatabase, shown_url
from stgcmt.storage.postgres.schema import LATEST

from support.common import LOCALHOST, PYTHON, free_port

SQLITE_ONLY = """
import json, sys
from pathlib import Path
from stgcmt.config import DatabaseConfig
from stgcmt.storage.backends import open_scp_storage
storage = open_scp_storage(DatabaseConfig(), Path(sys.argv[1]), 0)
storage.journal.close(); storage.index.close()
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("psycopg", "stgcmt.storage")))))
"""


def test_the_sqlite_default_never_imports_the_postgresql_driver(tmp_path):
    done = subprocess.run(
        [PYTHON, "-c", SQLITE_ONLY, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "stgcmt.storage.sqlite_index" in loaded
    assert [m for m in loaded if m.startswith(("psycopg", "stgcmt.storage.postgres"))] == []
    assert (tmp_path / "data" / "commitment.sqlite").exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db:5432/a", "postgresql://u:***@db:5432/a"),
        ("postgresql://u@/a?host=/run/pg&port=5433", "postgresql://u@/a?host=/run/pg&port=5433"),
        (
            "postgres://db/a?password=s3cret&sslmode=require",
            "postgres://db/a?password=***&sslmode=require",
        ),
        ("postgresql://u:p%40ss@db/a", "postgresql://u:***@db/a"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert shown_url(url) == shown


def test_a_node_is_named_after_its_host_and_port_unless_named():
    assert node_name(DatabaseConfig(node="pacs1"), 104) == "pacs1"
    assert node_name(DatabaseConfig(), 11112).endswith(":11112")


def test_an_unreachable_server_stops_the_start_with_the_url_and_the_reason(tmp_path):
    url = f"postgresql://stgcmt:s3cret@{LOCALHOST}:{free_port()}/archive"
    with pytest.raises(DatabaseUnavailable) as raised:
        open_scp_storage(DatabaseConfig(url=url), tmp_path / "data", 0)
    message = str(raised.value)
    assert shown_url(url) in message and "s3cret" not in message
    assert "Connection refused" in message or "connect" in message
    assert isinstance(raised.value, OSError)


def _versions(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, description FROM stgcmt_schema").fetchall()


def test_nodes_starting_together_migrate_the_schema_once(postgres_url):
    start = threading.Barrier(6)

    def open_database(_: int) -> None:
        start.wait(timeout=10)
        PgDatabase(postgres_url, pool_size=1).close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(open_database, range(6)))
    assert [v for v, _ in _versions(postgres_url)] == list(range(1, LATEST + 1))
    PgDatabase(postgres_url, pool_size=1).close()  # and again: nothing left to do
    assert len(_versions(postgres_url)) == LATEST


def test_a_schema_newer_than_this_program_is_refused(postgres_url):
    PgDatabase(postgres_url, pool_size=1).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "INSERT INTO stgcmt_schema (version, description) VALUES (%s, 'from the future')",
            (LATEST + 1,),
        )
    with pytest.raises(DatabaseUnavailable, match="upgrade stgcmt on this node"):
        PgDatabase(postgres_url, pool_size=1)
