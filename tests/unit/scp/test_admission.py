"""The SCP's admission rule on its own: each decision, the A-ASSOCIATE-RJ reason, and the events
it emits, which the ATNA audit (Security Alert) and the Prometheus counters are built from. The
end-to-end tests (tests/e2e/test_scp_trust.py, test_mutations.py) show the rules on the wire."""

from __future__ import annotations

import itertools

import pytest

from stgcmt import ul
from stgcmt.config import ScpConfig
from stgcmt.config.model import PeerProfile, RemoteAE
from stgcmt.events import (
    AssociationAccepted,
    AssociationRejected,
    Event,
    Events,
    Peer,
    SecurityAlert,
)
from stgcmt.scp.admission import Admission

_ids = itertools.count(1)


def _peer(
    calling: str = "MODALITY", host: str = "127.0.0.1", called: str = "ARCHIVE"
) -> ul.PeerInfo:
    return ul.PeerInfo(calling, called, host, 40000, next(_ids))


def _admission(
    *remotes: RemoteAE, active: int = 1, **config: object
) -> tuple[Admission, list[Event]]:
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    scp = ScpConfig(aet="ARCHIVE", remotes=remotes, **config)  # type: ignore[arg-type]
    return Admission(scp, lambda: active, events), seen


def test_an_accepted_association_is_one_event_naming_the_peer():
    admission, seen = _admission(RemoteAE("MODALITY", "127.0.0.1", 104))
    peer = _peer()
    assert admission.accept(peer) is None
    assert seen == [
        AssociationAccepted(Peer("MODALITY", "ARCHIVE", "127.0.0.1", 40000), at=seen[0].at)
    ]


def test_a_rejection_for_who_is_asking_is_also_a_security_alert_naming_the_peer():
    admission, seen = _admission(RemoteAE("MODALITY", "127.0.0.1", 104))
    rejection = admission.accept(_peer(calling="STRANGER"))
    assert rejection == ul.Rejection("calling-aet")
    who = Peer("STRANGER", "ARCHIVE", "127.0.0.1", 40000)
    rejected, alert = seen
    assert isinstance(rejected, AssociationRejected)
    assert (rejected.peer, rejected.reason) == (who, "calling-aet")
    assert "'STRANGER' is not a known peer" in rejected.detail
    assert isinstance(alert, SecurityAlert)
    assert (alert.kind, alert.detail, alert.peer) == ("rejected-association", rejected.detail, who)


def test_a_rejection_for_load_is_no_security_alert():
    admission, seen = _admission(
        RemoteAE("MODALITY", "127.0.0.1", 104), active=3, max_associations=2
    )
    assert admission.accept(_peer()) == ul.Rejection("congestion")
    assert [type(e) for e in seen] == [AssociationRejected]
    assert seen[0].detail == "2 associations already open (limit 2)"


def test_the_limit_counts_this_association_too():
    admission, _ = _admission(RemoteAE("MODALITY", "127.0.0.1", 104), active=2, max_associations=2)
    assert admission.accept(_peer()) is None


@pytest.mark.parametrize(
    ("everyone", "profile", "rejected"),
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
    ids=["default", "check_host-false", "profile-off", "profile-on-over-global-off"],
)
def test_a_peers_profile_check_host_wins_over_the_global_one(everyone, profile, rejected):
    remote = RemoteAE("MODALITY", "127.0.0.1", 104, PeerProfile(check_host=profile))
    admission, _ = _admission(remote, check_host=everyone)
    outcome = admission.accept(_peer(host="127.0.0.2"))
    assert outcome == (ul.Rejection("calling-aet") if rejected else None)


def test_wrong_host_detail_lists_every_configured_address():
    remote = RemoteAE(
        "MODALITY", "127.0.0.1", 104, PeerProfile(extra_hosts=("127.0.0.3", "127.0.0.4"))
    )
    admission, seen = _admission(remote)
    assert admission.accept(_peer(host="127.0.0.4")) is None
    assert admission.accept(_peer(host="127.0.0.2")) == ul.Rejection("calling-aet")
    assert seen[-2].detail == (
        "AE 'MODALITY' is configured at 127.0.0.1, 127.0.0.3, 127.0.0.4, not 127.0.0.2"
        " (add it to the peer's extra_hosts, or set check_host = false)"
    )


def test_a_host_name_is_resolved_to_the_addresses_it_stands_for():
    admission, _ = _admission(RemoteAE("MODALITY", "localhost", 104))
    assert admission.accept(_peer(host="127.0.0.1")) is None
    assert admission.accept(_peer(host="127.0.0.2")) == ul.Rejection("calling-aet")


def test_an_unresolvable_host_starts_the_scp_and_rejects_that_peer(caplog):
    admission, _ = _admission(RemoteAE("MODALITY", "no-such-host.invalid", 104))
    assert "cannot resolve no-such-host.invalid" in caplog.text
    assert admission.accept(_peer(host="127.0.0.1")) == ul.Rejection("calling-aet")


def test_the_called_ae_must_be_ours():
    admission, seen = _admission(accept_unknown=True)
    assert admission.accept(_peer(called="OTHER")) == ul.Rejection("called-aet")
    assert seen[0].detail == "called AE 'OTHER' is not ours ('ARCHIVE')"
