"""The index's UID filter: "absent" only for UIDs never added, once filled; the index's
lookups stay right through it (rows filled from the database, rows put since, removed rows)."""

from __future__ import annotations

import threading

from stgcmt.storage.interfaces import InstanceRow
from stgcmt.storage.sqlite_index import SqliteInstanceIndex
from stgcmt.storage.uid_filter import UidFilter


def test_absent_is_certain_maybe_is_asked():
    uids = [f"1.2.826.0.1.3680043.8.498.{n}" for n in range(20_000)]
    known = UidFilter(len(uids))
    assert known.may_hold("1.2.3")  # not filled yet: every lookup asks the database
    known.fill(lambda: uids[:10_000], "test-filter")
    assert known.wait_filled(10)
    for uid in uids[10_000:15_000]:
        known.add(uid)
    assert all(known.may_hold(uid) for uid in uids[:15_000])
    false_maybes = sum(known.may_hold(uid) for uid in uids[15_000:])
    assert false_maybes < 50  # ~0.3 % expected at 16 bits per UID; any is only a lookup


def test_a_fill_that_fails_leaves_every_answer_maybe():
    def broken():
        yield "1.2.3"
        raise OSError("database closed")

    known = UidFilter(10)
    known.fill(broken, "test-filter")
    assert not known.wait_filled(0.5)
    assert known.may_hold("9.9.9")


def test_concurrent_adds_lose_no_bit():
    known = UidFilter(0)
    known.fill(list, "test-filter")
    assert known.wait_filled(5)
    threads = [
        threading.Thread(target=lambda t=t: [known.add(f"1.{t}.{n}") for n in range(5000)])
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(known.may_hold(f"1.{t}.{n}") for t in range(4) for n in range(5000))


def _row(uid: str) -> InstanceRow:
    return InstanceRow(uid, "1.2.840.10008.5.1.4.1.1.7", None, None, None, "1.2.840.10008.1.2.1",
                       "instances/00/x.dcm", 10, "0" * 64, "AE", 1.0)  # fmt: skip


def test_lookups_through_the_filter_find_old_and_new_rows(tmp_path):
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")
    index.put(_row("1.2.3.1"))
    index.close()
    index = SqliteInstanceIndex(tmp_path / "index.sqlite")  # filled from the database
    try:
        assert index._known.wait_filled(10)
        index.put(_row("1.2.3.2"))
        index.flush()
        found = index.lookup(["1.2.3.1", "1.2.3.2", "1.2.3.3"])
        assert sorted(found) == ["1.2.3.1", "1.2.3.2"]
        index.remove("1.2.3.1")
        assert index.lookup(["1.2.3.1"]) == {}
    finally:
        index.close()


def test_stop_ends_the_fill_before_its_source_goes_away():
    """The index closes the connection the fill reads through only after ``stop``: a fill still
    running then would iterate over a closed SQLite connection (a crash, seen under mutation
    testing as a SIGSEGV when an index was closed right after it opened)."""
    source_open = threading.Event()
    source_open.set()
    read: list[int] = []
    after_close: list[int] = []

    def endless():
        n = 0
        while not after_close:  # a fill that ignores stop ends here, once it has been seen
            if not source_open.is_set():
                after_close.append(n)
            read.append(n)
            yield f"1.2.{n}"
            n += 1

    known = UidFilter(0)
    known.fill(endless, "test-filter")
    while not read:
        pass
    known.stop(timeout=1)
    source_open.clear()
    threading.Event().wait(0.1)
    assert after_close == []  # nothing read once stop returned
    assert known.may_hold("9.9.9")  # never filled: every lookup asks the index
