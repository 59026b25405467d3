"""Who may open an association to the SCU to report (scu/reports.py ``ReportHandler.accept``),
checked with a real journal: the A-ASSOCIATE-RJ reason, and the events the audit (Security
Alert) and the metrics are built from. tests/e2e/test_scu_trust.py shows it on the wire."""

from __future__ import annotations

import itertools
import socket

import pytest

from stgcmt import ul
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.events import AssociationAccepted, AssociationRejected, Event, Events, SecurityAlert
from stgcmt.scu.options import Reporter
from stgcmt.scu.reports import ReportHandler, Resolver

from support.scu import pending_transaction

_ids = itertools.count(1)
NOT_WAITED_FOR = (
    "calling AE title and address match no archive we are waiting for, nor a --reporter"
)


def _peer(
    calling: str = "ARCHIVE",
    host: str = "127.0.0.1",
    called: str = "CT1",
    proposed: tuple[str, ...] = (STORAGE_COMMITMENT_PUSH_MODEL,),
) -> ul.PeerInfo:
    return ul.PeerInfo(calling, called, host, 40000, next(_ids), proposed)


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
