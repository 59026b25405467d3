"""The :class:`~stgcmt.storage.interfaces.InstanceIndex` contract, on both backends (SQLite in
the data dir, PostgreSQL shared by nodes): rows, replacement, conflicts, the durable marks keyed
on the copy, what recovery sees, counts; then what only a shared index does (rows of several
nodes)."""

from __future__ import annotations

import pytest

from stgcmt.storage.interfaces import IndexedInstance, InstanceRow

CLASS = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"


def row(
    uid: str, *, size: int = 100, sha: str = "ab" * 32, at: float = 1000.5, **kw
) -> InstanceRow:
    values = dict(
        sop_instance_uid=uid,
        sop_class_uid=CLASS,
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        patient_id="P1",
        transfer_syntax="1.2.840.10008.1.2.1",
        blob=f"ab/{uid}.dcm",
        size=size,
        sha256=sha,
        source_aet="MODALITY",
        received_at=at,
    )
    return InstanceRow(**(values | kw))


def indexed(r: InstanceRow, durable: bool = False, read_back: bool = False) -> IndexedInstance:
    return IndexedInstance(
        r.sop_instance_uid,
        r.sop_class_uid,
        r.blob,
        r.size,
        r.sha256,
        durable,
        r.received_at,
        read_back,
    )


@pytest.fixture
def index(scp_backend):
    return scp_backend.index()


def test_put_then_lookup_gives_the_row_and_nothing_for_unknown_uids(index):
    first, second = row("1.2.1"), row("1.2.2", size=7, sha="cd" * 32, at=2000.25)
    index.put(first)
    index.put(second)
    assert index.lookup(["1.2.1", "1.2.2", "1.2.404"]) == {
        "1.2.1": indexed(first),
        "1.2.2": indexed(second),
    }
    assert index.lookup([]) == {}


def test_lookups_larger_than_a_batch_find_every_row(index):
    rows = [row(f"1.2.{i}") for i in range(1200)]
    for r in rows:
        index.put(r)
    found = index.lookup([r.sop_instance_uid for r in rows] + ["1.2.404"])
    assert set(found) == {r.sop_instance_uid for r in rows}
    assert (index.count(), index.total_bytes()) == (1200, 1200 * 100)


def test_a_second_put_replaces_the_row(index):
    index.put(row("1.2.1"))
    again = row("1.2.1", size=55, sha="ef" * 32, at=3000.0, sop_class_uid=CT)
    index.put(again)
    assert index.lookup(["1.2.1"]) == {"1.2.1": indexed(again)}
    assert (index.count(), index.total_bytes()) == (1, 55)


def test_mark_durable_marks_only_the_copy_the_caller_synced(index):
    synced, replaced, gone = row("1.2.1"), row("1.2.2"), row("1.2.3")
    for r in (synced, replaced, gone):
        index.put(r)
    stored_again = row("1.2.2", at=replaced.received_at + 1)  # same bytes, a new file
    index.put(stored_again)
    index.remove(gone.sop_instance_uid)
    marked = index.mark_durable([indexed(r) for r in (synced, replaced, gone)], read_back=False)
    assert marked == {"1.2.1"}
    now = index.lookup(["1.2.1", "1.2.2"])
    assert now["1.2.1"] == indexed(synced, durable=True)
    assert now["1.2.2"] == indexed(stored_again)
    assert [r.sop_instance_uid for r in index.non_durable()] == ["1.2.2"]


def test_read_back_is_kept_and_a_row_marked_twice_counts_as_marked(index):
    r = row("1.2.1")
    index.put(r)
    assert index.mark_durable([indexed(r)], read_back=True) == {"1.2.1"}
    assert index.mark_durable([indexed(r)], read_back=False) == {"1.2.1"}
    assert index.lookup(["1.2.1"])["1.2.1"] == indexed(r, durable=True, read_back=True)
    assert index.mark_durable([], read_back=False) == set()


def test_non_durable_streams_every_unsynced_row(index):
    rows = [row(f"1.2.{i}") for i in range(1100)]
    for r in rows:
        index.put(r)
    index.mark_durable([indexed(r) for r in rows[:100]], read_back=False)
    assert sorted(r.sop_instance_uid for r in index.non_durable()) == sorted(
        r.sop_instance_uid for r in rows[100:]
    )


def test_a_failed_sync_makes_earlier_unsynced_copies_unsafe_until_stored_again(index):
    before, durable, after, synced = (
        row("1.2.1"),
        row("1.2.2"),
        row("1.2.3", at=5000.0),
        row("1.2.4", at=6000.0),
    )
    for r in (before, durable, after, synced):
        index.put(r)
    index.mark_durable([indexed(durable)], read_back=False)
    # the sync failed at 2000: copies received by then and not durable, plus the ones it synced
    assert index.mark_unsafe([indexed(synced)], 2000.0) == 2
    now = index.lookup(["1.2.1", "1.2.2", "1.2.3", "1.2.4"])
    assert {uid for uid, r in now.items() if r.unsafe} == {"1.2.1", "1.2.4"}
    assert now["1.2.2"] == indexed(durable, durable=True)  # it was on disk before
    assert [r.sop_instance_uid for r in index.non_durable()] == ["1.2.3"]
    assert index.mark_durable([indexed(before), indexed(synced)], read_back=False) == set()
    assert index.mark_unsafe([], 2000.0) == 0  # marked once
    sent_again = row("1.2.1", at=7000.0)
    index.put(sent_again)
    assert index.lookup(["1.2.1"])["1.2.1"] == indexed(sent_again)
    assert index.mark_durable([indexed(sent_again)], read_back=False) == {"1.2.1"}


def test_unsafe_survives_reopening(index, scp_backend):
    r = row("1.2.1")
    index.put(r)
    index.mark_unsafe([], r.received_at)
    index.close()
    assert scp_backend.index().lookup(["1.2.1"])["1.2.1"].unsafe


def test_a_class_conflict_is_kept_once(index, scp_backend):
    index.put(row("1.2.1"))
    index.record_conflict("1.2.1", CT, "OTHER")
    index.record_conflict("1.2.1", CT, "OTHER")
    conflicts = scp_backend.queries().class_conflicts()
    assert [(c["sop_instance_uid"], c["sop_class_uid"], c["source_aet"]) for c in conflicts] == [
        ("1.2.1", CT, "OTHER")
    ]


def test_rows_survive_reopening(index, scp_backend):
    r = row("1.2.1")
    index.put(r)
    index.mark_durable([indexed(r)], read_back=False)
    index.close()
    assert scp_backend.index().lookup(["1.2.1"]) == {"1.2.1": indexed(r, durable=True)}


# -- one index, several nodes (PostgreSQL) -------------------------------------------------


def test_every_node_sees_every_row_but_recovers_only_its_own(postgres_url, tmp_path):
    from support.backends import Backend

    backend = Backend("postgresql", tmp_path / "data", postgres_url)
    try:
        a, b = backend.index("node-a"), backend.index("node-b")
        a.put(row("1.2.1"))
        b.put(row("1.2.2"))
        assert (
            set(a.lookup(["1.2.1", "1.2.2"]))
            == set(b.lookup(["1.2.1", "1.2.2"]))
            == {
                "1.2.1",
                "1.2.2",
            }
        )
        # a crash of node A cut short only what A was writing; B's rows are B's (or the
        # verifying node's) to sync and check
        assert [r.sop_instance_uid for r in a.non_durable()] == ["1.2.1"]
        assert [r.sop_instance_uid for r in b.non_durable()] == ["1.2.2"]
        # a row B stored is made durable by whichever node verifies it
        assert a.mark_durable([indexed(row("1.2.2"))], read_back=True) == {"1.2.2"}
        assert list(b.non_durable()) == []
        nodes = {r["sop_instance_uid"]: r["node"] for r in backend.queries().instances()}
        assert nodes == {"1.2.1": "node-a", "1.2.2": "node-b"}
    finally:
        backend.close()


def test_a_failed_sync_on_one_node_makes_unsafe_its_own_copies_and_those_it_synced(
    postgres_url, tmp_path
):
    """Node A's failed sync covered what A wrote (its page cache) and the copies its barrier
    synced; node B's other copies were in B's page cache, not concerned."""
    from support.backends import Backend

    backend = Backend("postgresql", tmp_path / "data", postgres_url)
    try:
        a, b = backend.index("node-a"), backend.index("node-b")
        a.put(row("1.2.1"))
        b.put(row("1.2.2"))
        b.put(row("1.2.3"))
        assert a.mark_unsafe([indexed(row("1.2.2"))], 2000.0) == 2
        found = b.lookup(["1.2.1", "1.2.2", "1.2.3"])
        assert {uid for uid, r in found.items() if r.unsafe} == {"1.2.1", "1.2.2"}
        assert [r.sop_instance_uid for r in b.non_durable()] == ["1.2.3"]
    finally:
        backend.close()
