"""The SCP's commitment journal: states, durable requests, duplicates, batches, attempts, on
both backends (SQLite file, PostgreSQL); then what only the shared PostgreSQL journal does
(leases between nodes, cluster-wide duplicates)."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE
from stgcmt.storage import scp_journal as sj
from stgcmt.storage.interfaces import JournalTransaction, ScpJournal
from stgcmt.storage.scp_journal import CommitmentJournal

CLASS = "1.2.840.10008.5.1.4.1.1.7"


def refs(count: int, start: int = 0) -> list[Reference]:
    return [Reference(CLASS, f"1.2.3.{i}") for i in range(start, start + count)]


@pytest.fixture
def journal(scp_backend):
    return scp_backend.journal()


@pytest.fixture
def sqlite_journal(tmp_path: Path):
    j = CommitmentJournal(tmp_path / "commitment.sqlite")
    yield j
    j.close()


def request(journal: ScpJournal, uid: str = "1.2.3.100", count: int = 2):
    return journal.record_request(uid, "MODALITY", "127.0.0.1", "new", refs(count))


def test_record_request_starts_received_and_survives_reopening(journal, scp_backend):
    tx = request(journal, count=3)
    assert isinstance(tx, JournalTransaction)
    assert (tx.state, tx.n_refs, tx.attempts, tx.duplicate_of) == (sj.RECEIVED, 3, 0, None)
    assert (tx.calling_aet, tx.peer_host, tx.report_assoc) == ("MODALITY", "127.0.0.1", "new")
    assert tx.label == f"transaction 1.2.3.100 (#{tx.id})"
    # durable before the N-ACTION is answered: another reader and a new journal see it
    assert [t["transaction_uid"] for t in scp_backend.queries().transactions()] == ["1.2.3.100"]
    journal.close()
    reopened = scp_backend.journal()
    assert reopened.get(tx.id) == tx
    assert [ref for _, ref in next(reopened.reference_batches(tx.id))] == refs(3)


def test_record_request_commits_with_full_sync(sqlite_journal):
    """The promise is made durable (synchronous=FULL for its commit), then NORMAL again."""
    request(sqlite_journal)
    assert sqlite_journal.db.query("PRAGMA synchronous")[0][0] == 1


def test_state_progression_to_delivered(journal):
    tx = request(journal)
    journal.set_state(tx.id, sj.VERIFYING)
    assert journal.in_state(sj.VERIFYING) == [journal.get(tx.id)]
    journal.record_results(tx.id, [(0, 0), (1, NO_SUCH_OBJECT_INSTANCE)])
    queued = journal.finish_verification(tx.id, first_attempt_at=123.0)
    assert (queued.state, queued.n_committed, queued.n_failed) == (sj.REPORT_PENDING, 1, 1)
    assert queued.next_attempt_at == 123.0
    report = journal.report(queued, "STGCMT_SCP")
    assert report.transaction_uid == "1.2.3.100"
    assert report.retrieve_ae_title == "STGCMT_SCP"
    assert report.committed == refs(1)
    assert [(f.sop_instance_uid, f.failure_reason) for f in report.failed] == [
        ("1.2.3.1", NO_SUCH_OBJECT_INSTANCE)
    ]
    assert journal.latest_finished("1.2.3.100") is None
    journal.mark_delivered(tx.id, "same association")
    done = journal.get(tx.id)
    assert (done.state, done.attempts, done.delivered_via) == (sj.DELIVERED, 1, "same association")
    assert done.next_attempt_at is None and done.last_error is None and done.delivered_at
    assert journal.latest_finished("1.2.3.100") == done
    assert journal.in_state(*sj.ACTIVE_STATES) == []


def test_failed_attempts_count_and_postponing_does_not(journal):
    tx = request(journal)
    journal.finish_verification(tx.id, first_attempt_at=0.0)
    journal.record_failed_attempt(tx.id, "cannot connect", next_attempt_at=10.0)
    journal.record_failed_attempt(tx.id, "cannot connect again", next_attempt_at=20.0)
    journal.postpone(tx.id, "waiting for the requester", next_attempt_at=30.0)
    after = journal.get(tx.id)
    assert after.attempts == 2
    assert (after.last_error, after.next_attempt_at) == ("waiting for the requester", 30.0)
    assert after.state == sj.REPORT_PENDING
    journal.mark_given_up(tx.id, "too many attempts")
    given_up = journal.get(tx.id)
    assert (given_up.state, given_up.last_error) == (sj.GIVEN_UP, "too many attempts")
    assert given_up.next_attempt_at is None
    assert journal.latest_finished("1.2.3.100") == given_up


def test_delivery_attempts_are_kept_in_order_and_survive_reopening(journal, scp_backend):
    tx = request(journal)
    other = request(journal, uid="1.2.3.200")
    before = time.time()
    journal.record_attempt(tx.id, "new", sj.FAILED, "connection refused", next_attempt_at=9.0)
    journal.record_attempt(other.id, "same", sj.FAILED, "no answer")
    journal.record_attempt(tx.id, "same", sj.DELIVERED)
    journal.close()
    attempts = scp_backend.journal().attempts(tx.id)
    assert [(a.via, a.outcome, a.error, a.next_attempt_at) for a in attempts] == [
        ("new", sj.FAILED, "connection refused", 9.0),
        ("same", sj.DELIVERED, None, None),
    ]
    assert before <= attempts[0].at <= attempts[1].at <= time.time()
    expected_node = None if scp_backend.url is None else "node-a"
    assert {a.node for a in attempts} == {expected_node}
    assert scp_backend.journal().attempts(4242) == []


def test_a_journal_from_before_delivery_attempts_gets_the_table_when_opened(tmp_path):
    """A commitment.sqlite written by an older stgcmt (no delivery_attempts table) keeps its
    transactions and records attempts once this version opens it."""
    path = tmp_path / "commitment.sqlite"
    older = CommitmentJournal(path)
    tx = request(older)
    older.close()
    with sqlite3.connect(path) as conn:  # as the older version left it
        conn.execute("DROP TABLE delivery_attempts")
    journal = CommitmentJournal(path)
    try:
        assert journal.get(tx.id).transaction_uid == "1.2.3.100"
        journal.record_attempt(tx.id, "new", sj.FAILED, "refused")
        assert [a.error for a in journal.attempts(tx.id)] == ["refused"]
    finally:
        journal.close()


def test_a_uid_still_active_makes_a_duplicate(journal):
    first = request(journal)
    second = request(journal)
    third = request(journal)
    assert second.duplicate_of == first.id
    assert third.duplicate_of == first.id  # of the original, never of a duplicate
    assert other_uid_is_not_duplicate(journal)


def other_uid_is_not_duplicate(journal: ScpJournal) -> bool:
    return request(journal, uid="1.2.3.200").duplicate_of is None


@pytest.mark.parametrize("finish", ["delivered", "given_up"])
def test_a_finished_uid_may_be_requested_again(journal, finish):
    first = request(journal)
    if finish == "delivered":
        journal.mark_delivered(first.id, "new association")
    else:
        journal.mark_given_up(first.id, "gave up")
    again = request(journal)
    assert again.duplicate_of is None
    assert journal.latest_finished("1.2.3.100") == journal.get(first.id)


def test_references_come_in_bounded_batches(journal, monkeypatch):
    monkeypatch.setattr(sj, "BATCH", 3)
    tx = journal.record_request("1.2.3.300", "M", None, "new", refs(7))
    batches = list(journal.reference_batches(tx.id))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [seq for batch in batches for seq, _ in batch] == list(range(7))
    assert [ref for batch in batches for _, ref in batch] == refs(7)


def test_empty_request_has_no_batches_and_an_empty_report(journal):
    tx = journal.record_request("1.2.3.400", "M", None, "new", [])
    assert list(journal.reference_batches(tx.id)) == []
    queued = journal.finish_verification(tx.id, first_attempt_at=0.0)
    assert (queued.n_committed, queued.n_failed) == (0, 0)
    report = journal.report(queued, "SCP")
    assert report.committed == [] and report.failed == []


def test_active_counts_by_state_leave_finished_ones_out(journal):
    assert journal.active_counts() == {}
    first, _, third = (request(journal, uid=f"1.2.3.{n}") for n in range(3))
    journal.set_state(first.id, sj.VERIFYING)
    journal.mark_given_up(third.id, "gave up")
    assert journal.active_counts() == {sj.RECEIVED: (1, 1), sj.VERIFYING: (1, 1)}


def test_claim_gives_the_fresh_row_until_the_transaction_is_finished(journal):
    tx = request(journal)
    journal.set_state(tx.id, sj.VERIFYING)
    claimed = journal.claim(tx.id)
    assert claimed is not None and claimed.state == sj.VERIFYING  # fresh, not the old row
    journal.finish_verification(tx.id, first_attempt_at=0.0)
    assert journal.claim(tx.id) == journal.get(tx.id)
    journal.mark_delivered(tx.id, "new association")
    assert journal.claim(tx.id) is None


# -- the shared PostgreSQL journal: several nodes --------------------------------------------


@pytest.fixture
def nodes(postgres_url, tmp_path):
    """Two nodes' journals on one database (leases of 0.3 s, so expiry is quick to reach)."""
    from support.backends import Backend

    backend = Backend("postgresql", tmp_path / "data", postgres_url)
    yield backend.journal("node-a", lease=0.3), backend.journal("node-b", lease=0.3)
    backend.close()


def _lease(journal, tx_id: int) -> tuple[str | None, float | None]:
    return tuple(
        journal.db.query(  # type: ignore[return-value]
            "SELECT lease_node, lease_until FROM transactions WHERE id = %s", (tx_id,)
        )[0]
    )


def test_the_receiving_node_holds_the_request_until_its_lease_expires(nodes):
    """No other node may verify or report before the receiving node has answered."""
    a, b = nodes
    tx = request(a)
    assert b.claim(tx.id) is None
    assert a.claim(tx.id) is not None  # renewed by its holder
    assert b.claim(tx.id) is None
    time.sleep(0.4)
    taken = b.claim(tx.id)
    assert taken is not None and taken.id == tx.id
    assert _lease(a, tx.id)[0] == "node-b"
    assert a.claim(tx.id) is None  # now the other way round


def test_a_failed_attempt_keeps_the_lease_until_the_next_attempt_is_due(nodes):
    a, b = nodes
    tx = request(a)
    a.finish_verification(tx.id, first_attempt_at=0.0)
    next_at = time.time() + 0.8
    a.record_failed_attempt(tx.id, "cannot connect", next_attempt_at=next_at)
    assert _lease(a, tx.id) == ("node-a", next_at)
    time.sleep(0.4)  # past the lease, not yet the next attempt: no early retry elsewhere
    assert b.claim(tx.id) is None
    time.sleep(0.5)
    assert b.claim(tx.id) is not None


def test_postponing_and_delivering_release_the_lease(nodes):
    a, b = nodes
    tx = request(a)
    a.finish_verification(tx.id, first_attempt_at=0.0)
    a.postpone(tx.id, "waiting for the requester", next_attempt_at=time.time() + 60)
    assert _lease(a, tx.id) == (None, None)
    assert b.claim(tx.id) is not None  # the requester came back to node B
    b.mark_delivered(tx.id, "the association it opened")
    row = b.db.query(
        "SELECT received_by, verified_by, delivered_by, lease_node FROM transactions WHERE id = %s",
        (tx.id,),
    )[0]
    assert row == ("node-a", "node-a", "node-b", None)
    assert a.claim(tx.id) is None


def test_a_claim_is_taken_by_exactly_one_of_many_racing_nodes(postgres_url, tmp_path):
    """Eight nodes claim one expired transaction at the same moment: one wins."""
    from support.backends import Backend

    backend = Backend("postgresql", tmp_path / "data", postgres_url)
    try:
        journals = [backend.journal(f"node-{i}", lease=30.0) for i in range(8)]
        tx = request(journals[0])
        journals[0].db.query("UPDATE transactions SET lease_until = 0 RETURNING id")
        start = threading.Barrier(len(journals))

        def claim(journal):
            start.wait(timeout=10)
            return journal.claim(tx.id)

        with ThreadPoolExecutor(len(journals)) as pool:
            won = [c for c in pool.map(claim, journals) if c is not None]
        assert len(won) == 1
        assert _lease(journals[0], tx.id)[0] in {f"node-{i}" for i in range(8)}
    finally:
        backend.close()


def test_active_counts_are_the_clusters_with_this_nodes_share(nodes):
    a, b = nodes
    first, _ = request(a, uid="1.2.3.1"), request(a, uid="1.2.3.2")
    request(b, uid="1.2.3.3")
    a.finish_verification(first.id, first_attempt_at=0.0)
    a.mark_delivered(request(b, uid="1.2.3.4").id, "new association")
    assert a.active_counts() == {sj.RECEIVED: (2, 1), sj.REPORT_PENDING: (1, 1)}
    assert b.active_counts() == {sj.RECEIVED: (2, 1), sj.REPORT_PENDING: (1, 0)}


def test_a_duplicate_transaction_uid_is_seen_across_nodes(nodes):
    a, b = nodes
    first = request(a)
    second = request(b)
    assert second.duplicate_of == first.id


def test_a_verification_taken_over_is_not_queued_twice(nodes):
    """Node A's late finish after node B delivered must not put the report back in the queue."""
    a, b = nodes
    tx = request(a)
    b.finish_verification(tx.id, first_attempt_at=0.0)
    b.mark_delivered(tx.id, "new association")
    late = a.finish_verification(tx.id, first_attempt_at=0.0)
    assert late.state == sj.DELIVERED


def test_results_recorded_in_runs_keep_each_reference_its_own_reason(journal):
    tx = request(journal, count=9)
    # runs of one reason, a lone failure, a gap filled later (the barrier's references), a
    # run broken by a reason change
    journal.record_results(tx.id, [(0, 0), (1, 0), (2, 0x0112), (3, 0), (6, 0), (7, 0x0110)])
    journal.record_results(tx.id, [(4, 0), (5, 0), (8, 0x0110)])
    queued = journal.finish_verification(tx.id, first_attempt_at=1.0)
    assert (queued.n_committed, queued.n_failed) == (6, 3)
    report = journal.report(queued, "AE")
    assert [r.sop_instance_uid for r in report.committed] == [
        f"1.2.3.{i}" for i in (0, 1, 3, 4, 5, 6)
    ]
    assert [(f.sop_instance_uid, f.failure_reason) for f in report.failed] == [
        ("1.2.3.2", 0x0112),
        ("1.2.3.7", 0x0110),
        ("1.2.3.8", 0x0110),
    ]


def test_runs_group_consecutive_sequence_numbers_with_one_reason():
    results = [(0, 0), (1, 0), (2, 5), (3, 5), (5, 5), (6, 0), (4, 0)]
    assert list(sj.runs(results)) == [(0, 1, 0), (2, 3, 5), (5, 5, 5), (6, 6, 0), (4, 4, 0)]
    assert list(sj.runs([])) == []
