"""The SCP's commitment journal: states, durable requests, duplicates, batches, attempts."""

from __future__ import annotations

from pathlib import Path

import pytest

from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE
from stgcmt.storage import scp_journal as sj
from stgcmt.storage.interfaces import JournalTransaction
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.storage.scp_journal import CommitmentJournal

CLASS = "1.2.840.10008.5.1.4.1.1.7"


def refs(count: int, start: int = 0) -> list[Reference]:
    return [Reference(CLASS, f"1.2.3.{i}") for i in range(start, start + count)]


@pytest.fixture
def journal(tmp_path: Path):
    j = CommitmentJournal(tmp_path / "commitment.sqlite")
    yield j
    j.close()


def request(journal: CommitmentJournal, uid: str = "1.2.3.100", count: int = 2):
    return journal.record_request(uid, "MODALITY", "127.0.0.1", "new", refs(count))


def test_record_request_starts_received_and_survives_reopening(journal, tmp_path):
    tx = request(journal, count=3)
    assert isinstance(tx, JournalTransaction)
    assert (tx.state, tx.n_refs, tx.attempts, tx.duplicate_of) == (sj.RECEIVED, 3, 0, None)
    assert (tx.calling_aet, tx.peer_host, tx.report_assoc) == ("MODALITY", "127.0.0.1", "new")
    assert tx.label == f"transaction 1.2.3.100 (#{tx.id})"
    # durable before the N-ACTION is answered: another reader and a new journal see it
    assert [t["transaction_uid"] for t in SqliteScpQueries(tmp_path).transactions()] == [
        "1.2.3.100"
    ]
    journal.close()
    reopened = CommitmentJournal(tmp_path / "commitment.sqlite")
    try:
        assert reopened.get(tx.id) == tx
        assert [ref for _, ref in next(reopened.reference_batches(tx.id))] == refs(3)
    finally:
        reopened.close()


def test_record_request_commits_with_full_sync(journal):
    """The promise is made durable (synchronous=FULL for its commit), then NORMAL again."""
    request(journal)
    assert journal.db.query("PRAGMA synchronous")[0][0] == 1


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


def test_a_uid_still_active_makes_a_duplicate(journal):
    first = request(journal)
    second = request(journal)
    third = request(journal)
    assert second.duplicate_of == first.id
    assert third.duplicate_of == first.id  # of the original, never of a duplicate
    assert other_uid_is_not_duplicate(journal)


def other_uid_is_not_duplicate(journal: CommitmentJournal) -> bool:
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
