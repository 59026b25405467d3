"""The seam's vocabulary, without sockets: context planning, success statuses, the one
rejection table read both ways, the sentences users see, and that the engine's classes
satisfy the seam's Protocols (checked by mypy: a wrong signature fails the type check)."""

from __future__ import annotations

import pytest

from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.ul.client import EngineAssociation
from stgcmt.ul.pdu import A_ASSOCIATE_RJ
from stgcmt.ul.seam import (
    MAX_CONTEXTS,
    NON_STORAGE_SYNTAXES,
    REJECTIONS,
    Association,
    ContextPlan,
    Handlers,
    Link,
    PeerInfo,
    Rejection,
    Server,
    aborted_request,
    cannot_connect,
    is_success,
    no_accepted_context,
    no_answer,
    no_commitment,
    rejected,
    requested_contexts,
)
from stgcmt.ul.server import EngineServer, associate_rj
from stgcmt.ul.services import EngineLink

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT, JPEG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"
PEER = PeerInfo("PACS", "STGCMT", "10.0.0.7", 104, 1)


def _pairs(count: int) -> list[tuple[str, str]]:
    return [(f"1.2.3.{i}", EXPLICIT) for i in range(count)]


# -- requested_contexts ----------------------------------------------------------------------


def test_one_context_per_storage_pair_then_commitment() -> None:
    plan = ContextPlan(storage=[(CT, EXPLICIT), (CT, JPEG), (MR, EXPLICIT)], commitment="scu")
    assert requested_contexts(plan) == [
        (CT, (EXPLICIT,)),
        (CT, (JPEG,)),
        (MR, (EXPLICIT,)),
        (STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES),
    ]


def test_commitment_alone_has_no_verification_unless_asked() -> None:
    assert requested_contexts(ContextPlan(commitment="scp")) == [
        (STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES)
    ]
    assert requested_contexts(ContextPlan(commitment="scp", echo=True))[-1] == (
        VERIFICATION,
        NON_STORAGE_SYNTAXES,
    )


def test_verification_when_nothing_else_is_asked_for() -> None:
    assert requested_contexts(ContextPlan()) == [(VERIFICATION, NON_STORAGE_SYNTAXES)]


def test_more_than_128_contexts_refused() -> None:
    assert len(requested_contexts(ContextPlan(storage=_pairs(MAX_CONTEXTS)))) == MAX_CONTEXTS
    with pytest.raises(ValueError, match="exceed 128"):
        requested_contexts(ContextPlan(storage=_pairs(MAX_CONTEXTS), commitment="scu"))
    with pytest.raises(ValueError):
        requested_contexts(ContextPlan(storage=_pairs(MAX_CONTEXTS + 1)))


# -- is_success ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xB006, 0xB007, 0xBFFF])
def test_success_and_warnings_are_success(status: int) -> None:
    assert is_success(status)


@pytest.mark.parametrize("status", [0x0001, 0x0110, 0x0122, 0x0211, 0x0213, 0xA700, 0xC000])
def test_failures_are_not(status: int) -> None:
    assert not is_success(status)


def test_no_status_is_not_success() -> None:
    assert not is_success(None)


# -- the rejection table ---------------------------------------------------------------------


@pytest.mark.parametrize("reason", sorted(REJECTIONS))
def test_rejection_built_and_read_back_in_the_same_words(reason: str) -> None:
    source, diag, always_transient, words = REJECTIONS[reason]  # type: ignore[index]
    rj = associate_rj(Rejection(reason))  # type: ignore[arg-type]
    assert (rj.source, rj.reason) == (source, diag)
    assert rj.result == (2 if always_transient else 1)
    received = A_ASSOCIATE_RJ.decode(rj.encode()[6:])  # what the requester decodes
    assert received == rj
    sentence = rejected(PEER, received.result, received.source, received.reason)
    assert sentence.startswith(f"{PEER} rejected the association")
    assert sentence.endswith(f": {words}")
    assert ("(transient)" in sentence) == always_transient


def test_each_reason_reads_back_unambiguously() -> None:
    codes = [(source, diag) for source, diag, _, _ in REJECTIONS.values()]
    assert len(set(codes)) == len(codes)


def test_transient_flag() -> None:
    assert Rejection("calling-aet").codes() == (1, 1, 3)
    assert Rejection("calling-aet", transient=True).codes() == (2, 1, 3)
    assert Rejection("congestion").codes()[0] == 2  # congestion is always transient
    assert "(transient)" in rejected(PEER, *Rejection("called-aet", transient=True).codes())
    assert "(transient)" not in rejected(PEER, *Rejection("called-aet").codes())


def test_unknown_rejection_points_at_the_peer_log() -> None:
    assert rejected(PEER, 1, 1, 99).endswith("see the peer's log")


# -- the sentences ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence", [cannot_connect, no_answer, aborted_request, no_commitment, rejected]
)
def test_sentences_name_the_peer(sentence: object) -> None:
    text = sentence(PEER, 1, 1, 1) if sentence is rejected else sentence(PEER)  # type: ignore[operator]
    assert str(PEER) in text
    assert "PACS@10.0.0.7:104" in text


def test_no_commitment_names_the_sop_class() -> None:
    assert STORAGE_COMMITMENT_PUSH_MODEL in no_commitment("PACS@host:104")


def test_no_accepted_context_blames_commitment_when_it_was_proposed() -> None:
    proposed = [CT, STORAGE_COMMITMENT_PUSH_MODEL]
    assert no_accepted_context(PEER, proposed) == no_commitment(PEER)
    other = no_accepted_context(PEER, [CT])
    assert str(PEER) in other and "none of the proposed presentation contexts" in other


# -- the engine satisfies the Protocols ------------------------------------------------------


def _serves(server: Server) -> Server:
    return server


def test_engine_classes_satisfy_the_protocols() -> None:
    """mypy checks these assignments structurally; a drifted signature fails the type check."""
    link: type[Link] = EngineLink
    association: type[Association] = EngineAssociation
    server = EngineServer("STGCMT", "127.0.0.1", 0, Handlers())  # not started: no socket
    assert _serves(server) is server
    assert link is EngineLink and association is EngineAssociation
    members = {name for name in vars(Association) if not name.startswith("_")}
    assert members <= set(dir(EngineAssociation))  # EngineLink's peer is set per instance
    assert {"start", "stop", "port", "active_associations"} <= set(dir(server))
