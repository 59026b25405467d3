"""The index's batched writer: rows visible at once, written in batches, flushed on demand,
kept (and new ones refused) while the database cannot be written."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from stgcmt.storage import row_writer
from stgcmt.storage.interfaces import InstanceRow
from stgcmt.storage.sqlite_index import SqliteInstanceIndex

from support.common import wait_for


def _row(n: int, size: int = 5000) -> InstanceRow:
    return InstanceRow(
        f"1.2.3.{n}", "1.2.840.10008.5.1.4.1.1.7", None, None, None, "1.2.840.10008.1.2.1",
        f"instances/00/{n}.dcm", size, f"{n:064x}", "AE", 1000.0 + n,
    )  # fmt: skip


def _rows_in_database(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])


@pytest.fixture
def slow_batches(monkeypatch):
    """A writer that waits 30 s for its batch to fill: rows stay pending unless flushed."""
    monkeypatch.setattr(row_writer, "BATCH_LINGER", 30.0)


def test_a_row_is_visible_before_it_is_written_and_written_by_flush(tmp_path, slow_batches):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    try:
        index.put(_row(1))
        assert _rows_in_database(tmp_path / "index.sqlite") == 0
        found = index.lookup(["1.2.3.1", "1.2.3.2"])
        assert list(found) == ["1.2.3.1"] and not found["1.2.3.1"].durable
        assert found["1.2.3.1"].received_at == 1001.0
        index.flush()
        assert _rows_in_database(tmp_path / "index.sqlite") == 1
        assert index.lookup(["1.2.3.1"])["1.2.3.1"].sha256 == f"{1:064x}"
    finally:
        index.close()


def test_a_full_batch_is_written_without_waiting(tmp_path, slow_batches):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    try:
        for n in range(row_writer.BATCH_ROWS):
            index.put(_row(n))
        full = row_writer.BATCH_ROWS
        assert wait_for(lambda: _rows_in_database(tmp_path / "index.sqlite") == full, 5)
    finally:
        index.close()


def test_a_large_instance_row_is_written_before_put_returns(tmp_path, slow_batches):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    try:
        index.put(_row(1))
        index.put(_row(2, size=10 << 20))
        assert _rows_in_database(tmp_path / "index.sqlite") == 2  # and what was before it
    finally:
        index.close()


def test_mark_durable_and_close_write_pending_rows_first(tmp_path, slow_batches):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    index.put(_row(1))
    [pending] = index.lookup(["1.2.3.1"]).values()
    assert index.mark_durable([pending], read_back=False) == {"1.2.3.1"}
    assert index.lookup(["1.2.3.1"])["1.2.3.1"].durable
    index.put(_row(2))
    index.close()
    assert _rows_in_database(tmp_path / "index.sqlite") == 2


def test_rows_are_kept_in_order_and_new_ones_refused_while_writing_fails(slow_batches):
    written: list[str] = []
    failing = [OSError(errno.ENOSPC, "database or disk is full")]

    def write(rows):
        if failing:
            raise failing[0]
        written.extend(row.sop_instance_uid for row in rows)

    writer = row_writer.RowWriter(write, "test-writer")
    try:
        writer.add(_row(1))
        writer.add(_row(2))
        with pytest.raises(OSError) as raised:
            writer.flush()
        assert raised.value.errno == errno.ENOSPC
        assert writer.pending("1.2.3.1") is not None  # still visible, still to be written
        with pytest.raises(OSError) as refused:
            writer.add(_row(3))
        assert refused.value.errno == errno.ENOSPC and writer.pending("1.2.3.3") is None
        failing.clear()
        writer.flush()
        assert written == ["1.2.3.1", "1.2.3.2"]
        assert writer.pending("1.2.3.1") is None
        writer.add(_row(3))  # accepted again
    finally:
        writer.close()
    assert written == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]


def test_too_many_pending_rows_are_refused(monkeypatch, slow_batches):
    monkeypatch.setattr(row_writer, "MAX_PENDING_ROWS", 3)
    writer = row_writer.RowWriter(lambda rows: None, "test-writer")
    try:
        for n in range(3):
            writer.add(_row(n))
        with pytest.raises(OSError) as refused:
            writer.add(_row(9))
        assert refused.value.errno == errno.EAGAIN
    finally:
        writer.close()


def test_a_removed_row_is_not_written_later(tmp_path, slow_batches):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    try:
        index.put(_row(1))
        index.remove("1.2.3.1")
        index.flush()
        assert index.lookup(["1.2.3.1"]) == {}
        assert _rows_in_database(tmp_path / "index.sqlite") == 0
    finally:
        index.close()
