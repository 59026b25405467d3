"""Who may open an association to the SCU to report (scu/reports.py ``ReportHandler.accept``),
checked with a real journal: the A-ASSOCIATE-RJ reason, and the events the audit (Security
Alert) and the metrics are built from. tests/e2e/test_scu_trust.py shows it on the wire."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from stgcmt import ul
from stgcmt.dicom.codec import encode_report
from stgcmt.dicom.commitment import CommitmentReport, Reference
from stgcmt.dicom.status import PROCESSING_FAILURE, SUCCESS, describe_status
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.events import AssociationAccepted, AssociationRejected, Event, Events, SecurityAlert
from stgcmt.scu.files import finish_due_actions
from stgcmt.scu.options import Reporter
from stgcmt.scu.reports import ReportHandler, Resolver

from support.scu import pending_transaction, refs

_ids = itertools.count(1)
NOT_WAITED_FOR = (
    "calling AE title and address match no archive we are waiting for, nor a --reporter"
)


def _peer(
    calling: str = "ARCHIVE",
    host: str = "127.0.0.1",
    called: str = "CT1",
    proposed: tuple[str, ...] = (STORAGE_COMMITMENT_PUSH_MODEL,),
    port: int = 40000,
) -> ul.PeerInfo:
    return ul.PeerInfo(calling, called, host, port, next(_ids), proposed)


@pytest.fixture
def handler(scu_journal, tmp_path):
    """A handler of SCU ``CT1`` waiting for a report from ARCHIVE@127.0.0.1:104; its events."""
    pending_transaction(scu_journal, tmp_path / "out", 1)
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    return ReportHandler(scu_journal, "CT1", (Reporter("OTHERPACS", "localhost"),), events), seen


def _rejected_with(seen: list[Event], peer: ul.PeerInfo, reason: str, detail: str) -> None:
    rejected, alert = seen
    assert isinstance(rejected, AssociationRejected) and isinstance(alert, SecurityAlert)
    assert (rejected.peer.calling_aet, rejected.peer.host) == (peer.calling_aet, peer.host)
    assert (rejected.reason, rejected.detail) == (reason, detail)
    assert (alert.kind, alert.detail, alert.peer) == ("rejected-association", detail, rejected.peer)


def test_the_archive_asked_is_accepted_and_that_is_one_event(handler):
    reports, seen = handler
    assert reports.accept(_peer()) is None
    assert [type(e) for e in seen] == [AssociationAccepted]
    assert seen[0].peer.calling_aet == "ARCHIVE"


def test_an_association_not_addressed_to_us_is_rejected_and_alerted(handler):
    reports, seen = handler
    peer = _peer(called="SOMEONE")
    assert reports.accept(peer) == ul.Rejection("called-aet")
    _rejected_with(seen, peer, "called-aet", "called AE 'SOMEONE' is not ours")


@pytest.mark.parametrize(
    "peer",
    [
        _peer(calling="FORGER"),
        _peer(host="127.0.0.2"),
        _peer(calling="OTHERPACS", host="127.0.0.9"),
    ],
    ids=["unknown-ae", "archive-ae-from-another-address", "reporter-ae-from-another-address"],
)
def test_a_peer_we_wait_for_nothing_from_is_rejected_and_alerted(handler, peer):
    reports, seen = handler
    assert reports.accept(peer) == ul.Rejection("calling-aet")
    _rejected_with(seen, peer, "calling-aet", NOT_WAITED_FOR)


@pytest.mark.parametrize(
    "host", ["::ffff:127.0.0.1", "127.0.0.1%lo"], ids=["ipv4-mapped-ipv6", "with-scope"]
)
def test_the_archives_address_matches_in_every_spelling(handler, host):
    reports, _ = handler
    assert reports.accept(_peer(host=host)) is None


def test_a_named_reporter_is_matched_by_the_addresses_its_host_name_has(handler):
    reports, _ = handler
    assert reports.accept(_peer(calling="OTHERPACS", host="127.0.0.1")) is None


def test_verification_alone_is_accepted_from_anyone(handler):
    reports, seen = handler
    assert (
        reports.accept(_peer(calling="ANYONE", host="127.0.0.7", proposed=(VERIFICATION,))) is None
    )
    both = (VERIFICATION, STORAGE_COMMITMENT_PUSH_MODEL)
    assert reports.accept(_peer(calling="ANYONE", proposed=both)) == ul.Rejection("calling-aet")


def test_a_rejected_reporter_is_one_security_line_for_log_monitoring(handler, caplog):
    reports, _ = handler
    reports.accept(_peer(calling="FORGER"))
    assert caplog.messages == [
        "security: association rejected (calling AE title not recognised) from calling AE"
        f" 'FORGER' at 127.0.0.1 port 40000 (called 'CT1'): {NOT_WAITED_FOR}; nothing deleted"
    ]


def test_a_host_name_keeps_the_addresses_it_had_and_a_failed_lookup_is_tried_again(monkeypatch):
    resolver = Resolver()
    real = socket.getaddrinfo

    def down(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "name server down")

    monkeypatch.setattr(socket, "getaddrinfo", down)
    assert resolver.addresses("localhost") == frozenset()  # nobody matches it for now
    monkeypatch.setattr(socket, "getaddrinfo", real)
    assert "127.0.0.1" in resolver.addresses("localhost")  # not remembered: looked up again
    monkeypatch.setattr(socket, "getaddrinfo", down)
    assert "127.0.0.1" in resolver.addresses("localhost")  # resolved once, kept


# -- what a report on an accepted association makes the SCU do, and answer ---------------------


def _report_event(peer: ul.PeerInfo, files, uid: str = "1.2.3.9", event_type: int = 1):
    data = encode_report(CommitmentReport(uid, committed=refs(files)), implicit=True)
    return ul.EventReport(peer, event_type, data)


@pytest.fixture
def archive_reports(scu_journal, tmp_path):
    """CT1 waiting for ARCHIVE@127.0.0.1:104 to commit two files (deleted once committed)."""
    files = pending_transaction(scu_journal, tmp_path / "out", 2, on_commit="delete")
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    return ReportHandler(scu_journal, "CT1", events=events), files, seen


def _refused(caplog, peer: ul.PeerInfo, reason: str) -> str:
    return (
        f"N-EVENT-REPORT from {peer} answered {describe_status(PROCESSING_FAILURE)}: {reason};"
        " nothing done"
    )


def test_a_report_from_the_archive_asked_is_recorded_acted_on_and_answered_success(
    archive_reports, scu_journal, caplog
):
    reports, files, _ = archive_reports
    peer = _peer(port=104)
    with caplog.at_level(logging.INFO, logger="stgcmt.scu"):
        assert reports.on_report(_report_event(peer, files), "same association") == SUCCESS
    assert scu_journal.get(1).state == "committed"
    assert not any(f.path.exists() for f in files)
    label = scu_journal.get(1).label
    assert (
        f"{label}: report from {peer} on same association: 2 committed, 0 failed" in caplog.messages
    )


def test_on_our_own_association_the_archive_must_answer_from_the_port_we_sent_to(
    archive_reports, scu_journal
):
    reports, files, seen = archive_reports
    elsewhere = _peer(port=105)  # same AE and host, another port: not the association we opened
    assert (
        reports.on_report(_report_event(elsewhere, files), "same association") == PROCESSING_FAILURE
    )
    assert scu_journal.get(1).state == "pending" and all(f.path.exists() for f in files)
    [alert] = seen
    assert isinstance(alert, SecurityAlert) and alert.kind == "forged-report"
    assert alert.detail == (
        "N-EVENT-REPORT on same association refused: transaction 1.2.3.9 (#1) was sent to"
        f" ARCHIVE@127.0.0.1:104, not to {elsewhere}"
    )
    # on a new association the archive connects from any port
    assert reports.on_report(_report_event(elsewhere, files), "new association") == SUCCESS


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            lambda peer, files: _report_event(peer, files, event_type=3),
            "unusable report: Event Type ID 3",
        ),
        (
            lambda peer, files: _report_event(peer, files, uid="1.2.3.77"),
            "unknown Transaction UID 1.2.3.77",
        ),
    ],
    ids=["event-type-3", "unknown-transaction"],
)
def test_an_unusable_report_is_answered_0110_and_says_why(
    archive_reports, scu_journal, caplog, event, reason
):
    reports, files, _ = archive_reports
    peer = _peer(port=104)
    assert reports.on_report(event(peer, files), "new association") == PROCESSING_FAILURE
    assert caplog.messages == [_refused(caplog, peer, reason)]
    assert scu_journal.get(1).state == "pending" and all(f.path.exists() for f in files)


def test_a_report_on_a_verification_only_association_is_a_forgery(archive_reports, scu_journal):
    reports, files, seen = archive_reports
    peer = _peer(port=104, proposed=(VERIFICATION,))
    assert reports.on_report(_report_event(peer, files), "new association") == PROCESSING_FAILURE
    [alert] = seen
    assert (alert.kind, alert.detail) == (  # type: ignore[union-attr]
        "forged-report",
        "N-EVENT-REPORT on new association refused: the association proposed only"
        " Verification (accepted from anyone for C-ECHO)",
    )
    assert scu_journal.get(1).state == "pending" and all(f.path.exists() for f in files)


def test_a_report_that_cannot_be_processed_is_still_answered(archive_reports, scu_journal, caplog):
    reports, files, _ = archive_reports
    scu_journal.close()  # the journal fails under the report
    assert (
        reports.on_report(_report_event(_peer(port=104), files), "new association")
        == PROCESSING_FAILURE
    )
    assert "could not be processed" in caplog.text
    assert all(f.path.exists() for f in files)


def test_an_ip_address_needs_no_name_server(monkeypatch):
    def down(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "name server down")

    monkeypatch.setattr(socket, "getaddrinfo", down)
    resolver = Resolver()
    assert resolver.addresses("127.0.0.1") == {"127.0.0.1"}
    assert resolver.addresses("::ffff:127.0.0.1") == {"127.0.0.1"}
    assert resolver.addresses("fe80::1%lo") == {"fe80::1"}


def test_a_crash_after_recording_a_report_leaves_its_deletions_due_for_the_restart(
    archive_reports, scu_journal, tmp_path
):
    _, files, _ = archive_reports
    report = tmp_path / "report.bin"
    report.write_bytes(_report_event(_peer(port=104), files).data or b"")
    agent = (
        "import sys; from pathlib import Path; from stgcmt import ul;"
        " from stgcmt.scu.reports import ReportHandler;"
        " from stgcmt.storage.scu_journal import ScuJournal;"
        " peer = ul.PeerInfo('ARCHIVE', 'CT1', '127.0.0.1', 104, 1, ());"
        " event = ul.EventReport(peer, 1, Path(sys.argv[2]).read_bytes());"
        " ReportHandler(ScuJournal(Path(sys.argv[1])), 'CT1').on_report(event, 'new association')"
    )
    env = os.environ | {"STGCMT_CRASH_POINTS": "scu.report.after_record"}
    run = subprocess.run(
        [sys.executable, "-c", agent, str(scu_journal.path), str(report)],
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == -signal.SIGKILL
    assert scu_journal.get(1).state == "committed"  # recorded before the crash...
    assert [r.action for r in scu_journal.files(1)] == ["due", "due"]  # ...not acted on
    assert all(f.path.exists() for f in files)
    finish_due_actions(scu_journal)  # what the next start does
    assert not any(f.path.exists() for f in files)


def test_a_report_acts_on_its_own_transaction_only_and_counts_what_it_ignored(
    scu_journal, tmp_path, caplog
):
    earlier = pending_transaction(scu_journal, tmp_path / "a", 1, "1.2.3.1", on_commit="delete")
    scu_journal.record_report(CommitmentReport("1.2.3.1", committed=refs(earlier)), "test")
    # ...its deletion left due (the agent stopped before acting): the next start's job
    files = pending_transaction(scu_journal, tmp_path / "b", 1, "1.2.3.2", on_commit="delete")
    stranger = Reference(files[0].sop_class_uid, "1.2.3.4.5.6")
    report = CommitmentReport("1.2.3.2", committed=[*refs(files), stranger])
    peer = _peer(port=104)
    event = ul.EventReport(peer, 1, encode_report(report, implicit=True))
    with caplog.at_level(logging.INFO, logger="stgcmt.scu"):
        assert ReportHandler(scu_journal, "CT1").on_report(event, "new association") == SUCCESS
    assert not files[0].path.exists() and earlier[0].path.exists()
    assert (
        f"{scu_journal.get(2).label}: report from {peer} on new association: 1 committed,"
        " 0 failed; 1 references we never asked about ignored"
    ) in caplog.messages
