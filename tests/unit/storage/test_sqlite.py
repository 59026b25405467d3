"""The SQLite plumbing: WAL, durable transactions, a failed COMMIT, read-only opening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stgcmt.storage.sqlite import Database, StorageUnavailable, chunked, open_readonly

SCHEMA = """
CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
)
"""


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "sub" / "test.sqlite", SCHEMA)
    yield database
    database.close()


def test_opens_in_wal_mode_with_its_schema(db: Database):
    assert db.path.parent.is_dir()  # the directory was created
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    assert db.query("PRAGMA foreign_keys")[0][0] == 1
    tables = {row[0] for row in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"parent", "child"}  # the write probe's table was rolled back


def test_schema_is_idempotent(tmp_path: Path):
    path = tmp_path / "again.sqlite"
    Database(path, SCHEMA).close()
    db = Database(path, SCHEMA)
    try:
        assert db.query("SELECT count(*) FROM parent")[0][0] == 0
    finally:
        db.close()


def test_committed_rows_are_visible_to_a_reader(db: Database):
    with db.transaction() as conn:
        conn.execute("INSERT INTO parent VALUES (1)")
    reader = open_readonly(db.path)
    try:
        assert reader.execute("SELECT id FROM parent").fetchall()[0]["id"] == 1
    finally:
        reader.close()


def test_durable_transaction_syncs_fully_and_restores_normal(db: Database):
    normal = db.query("PRAGMA synchronous")[0][0]
    seen = []
    with db.transaction(durable=True) as conn:
        seen.append(conn.execute("PRAGMA synchronous").fetchone()[0])
        conn.execute("INSERT INTO parent VALUES (1)")
    assert seen == [2]  # FULL for the barrier's commit
    assert db.query("PRAGMA synchronous")[0][0] == normal == 1  # back to NORMAL


def test_an_exception_rolls_back(db: Database):
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO parent VALUES (1)")
        raise RuntimeError("abandon")
    assert db.query("SELECT count(*) FROM parent")[0][0] == 0


def test_failed_commit_rolls_back_and_leaves_the_connection_usable(db: Database):
    """A deferred foreign key makes COMMIT itself fail and leaves the transaction open, as a
    full disk can: the next transaction must still work."""
    with pytest.raises(sqlite3.IntegrityError), db.transaction(durable=True) as conn:
        conn.execute("INSERT INTO parent VALUES (1)")
        conn.execute("INSERT INTO child VALUES (1, 99)")  # no parent 99: fails at COMMIT
    assert db.query("SELECT count(*) FROM parent")[0][0] == 0  # rolled back, not half-kept
    assert db.query("PRAGMA synchronous")[0][0] == 1  # restored despite the failure
    with db.transaction() as conn:
        conn.execute("INSERT INTO parent VALUES (2)")
        conn.execute("INSERT INTO child VALUES (1, 2)")
    assert db.query("SELECT count(*) FROM child")[0][0] == 1


def test_read_only_open_never_creates_and_never_writes(db: Database, tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        open_readonly(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    reader = open_readonly(db.path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("INSERT INTO parent VALUES (1)")
    finally:
        reader.close()


def test_unwritable_directory_is_storage_unavailable(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable):
        Database(blocker / "db.sqlite", SCHEMA)


def test_chunked_bounds_batches():
    assert [list(c) for c in chunked([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(chunked([], 3)) == []
