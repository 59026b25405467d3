"""The PS3.8 state machine table on its own: no sockets, no loop."""

from __future__ import annotations

import pytest

from stgcmt.ul import fsm
from stgcmt.ul.fsm import ABORTS, Action, Event, State, step

PDU_EVENTS = (
    Event.AC_RECEIVED,
    Event.RJ_RECEIVED,
    Event.RQ_RECEIVED,
    Event.P_DATA_RECEIVED,
    Event.RELEASE_RQ_RECEIVED,
    Event.RELEASE_RP_RECEIVED,
    Event.ABORT_RECEIVED,
    Event.INVALID_PDU,
)
CONNECTED = [s for s in State if s not in (State.CLOSED, State.AWAITING_TRANSPORT_OPEN)]


def run(state: State, *events: Event) -> list[tuple[Action, State]]:
    """Walk the table; AR-8's next state as the association-requester would take it."""
    steps = []
    for event in events:
        action, state = step(state, event)
        steps.append((action, state))
    return steps


def test_names_follow_the_standard() -> None:
    assert [s.value for s in State] == [
        f"Sta{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
    ]
    assert sorted(e.value for e in Event) == sorted(f"Evt{n}" for n in range(1, 20))
    assert len(Action) == 8 + 2 + 10 + 8


def test_the_standard_table_has_its_cells() -> None:
    # PS3.8 Table 9-10 as pynetdicom transcribes it: 123 cells, plus our two extensions
    assert fsm.STANDARD_CELLS == 123
    assert len(fsm.TRANSITIONS) == 125
    pynetdicom = pytest.importorskip("pynetdicom.fsm")
    theirs = {(State(s), Event(e)): a for (e, s), a in pynetdicom.TRANSITION_TABLE.items()}
    ours = {k: v[0].value for k, v in fsm.TRANSITIONS.items() if k not in fsm.EXTENSIONS}
    assert ours == theirs


def test_every_action_is_used() -> None:
    assert {action for action, _ in fsm.TRANSITIONS.values()} == set(Action)


@pytest.mark.parametrize("state", CONNECTED)
@pytest.mark.parametrize("event", PDU_EVENTS)
def test_every_pdu_has_an_answer_wherever_a_transport_is_open(state, event) -> None:
    assert fsm.allows(state, event)


def test_requester_establishes_and_releases() -> None:
    assert run(
        State.CLOSED,
        Event.ASSOCIATE_REQUEST,
        Event.TRANSPORT_CONFIRM,
        Event.AC_RECEIVED,
        Event.P_DATA_REQUEST,
        Event.P_DATA_RECEIVED,
        Event.RELEASE_REQUEST,
        Event.P_DATA_RECEIVED,
        Event.RELEASE_RP_RECEIVED,
    ) == [
        (Action.AE_1, State.AWAITING_TRANSPORT_OPEN),
        (Action.AE_2, State.AWAITING_AC),
        (Action.AE_3, State.ESTABLISHED),
        (Action.DT_1, State.ESTABLISHED),
        (Action.DT_2, State.ESTABLISHED),
        (Action.AR_1, State.AWAITING_RELEASE_RP),
        (Action.AR_6, State.AWAITING_RELEASE_RP),
        (Action.AR_3, State.CLOSED),
    ]


def test_requester_rejected() -> None:
    assert step(State.AWAITING_AC, Event.RJ_RECEIVED) == (Action.AE_4, State.CLOSED)


def test_acceptor_accepts_and_the_peer_releases() -> None:
    assert run(
        State.CLOSED,
        Event.TRANSPORT_INDICATION,
        Event.RQ_RECEIVED,
        Event.ASSOCIATE_ACCEPT,
        Event.P_DATA_RECEIVED,
        Event.RELEASE_RQ_RECEIVED,
        Event.P_DATA_REQUEST,
        Event.RELEASE_RESPONSE,
        Event.TRANSPORT_CLOSED,
    ) == [
        (Action.AE_5, State.AWAITING_RQ),
        (Action.AE_6, State.AWAITING_LOCAL_RESPONSE),
        (Action.AE_7, State.ESTABLISHED),
        (Action.DT_2, State.ESTABLISHED),
        (Action.AR_2, State.AWAITING_LOCAL_RELEASE_RESPONSE),
        (Action.AR_7, State.AWAITING_LOCAL_RELEASE_RESPONSE),
        (Action.AR_4, State.CLOSING),
        (Action.AR_5, State.CLOSED),
    ]


def test_acceptor_rejects_and_artim_closes() -> None:
    assert run(State.AWAITING_LOCAL_RESPONSE, Event.ASSOCIATE_REJECT, Event.ARTIM_EXPIRED) == [
        (Action.AE_8, State.CLOSING),
        (Action.AA_2, State.CLOSED),
    ]


def test_silent_connection_artim() -> None:
    assert step(State.AWAITING_RQ, Event.ARTIM_EXPIRED) == (Action.AA_2, State.CLOSED)
    assert step(State.AWAITING_RQ, Event.TRANSPORT_CLOSED) == (Action.AA_5, State.CLOSED)


def test_release_collision_as_requester() -> None:
    # AR-8 leads the requester to Sta9: it answers (AR-9), then awaits the RP (AR-3 closes)
    assert fsm.collision_state(is_requester=True) is State.COLLISION_REQUESTER_AWAITING_LOCAL
    assert step(State.AWAITING_RELEASE_RP, Event.RELEASE_RQ_RECEIVED)[0] is Action.AR_8
    assert run(
        State.COLLISION_REQUESTER_AWAITING_LOCAL,
        Event.RELEASE_RESPONSE,
        Event.RELEASE_RP_RECEIVED,
    ) == [(Action.AR_9, State.COLLISION_REQUESTER_AWAITING_RP), (Action.AR_3, State.CLOSED)]


def test_release_collision_as_acceptor() -> None:
    # Sta10: await the requester's RP (AR-10), then answer (AR-4) and await the close
    assert fsm.collision_state(is_requester=False) is State.COLLISION_ACCEPTOR_AWAITING_RP
    assert run(
        State.COLLISION_ACCEPTOR_AWAITING_RP,
        Event.RELEASE_RP_RECEIVED,
        Event.RELEASE_RESPONSE,
        Event.TRANSPORT_CLOSED,
    ) == [
        (Action.AR_10, State.COLLISION_ACCEPTOR_AWAITING_LOCAL),
        (Action.AR_4, State.CLOSING),
        (Action.AR_5, State.CLOSED),
    ]


@pytest.mark.parametrize(
    ("state", "event", "action"),
    [
        (State.AWAITING_RQ, Event.P_DATA_RECEIVED, Action.AA_1),
        (State.AWAITING_RQ, Event.RELEASE_RQ_RECEIVED, Action.AA_1),
        (State.AWAITING_RQ, Event.INVALID_PDU, Action.AA_1),
        (State.AWAITING_LOCAL_RESPONSE, Event.P_DATA_RECEIVED, Action.AA_8),
        (State.AWAITING_AC, Event.RQ_RECEIVED, Action.AA_8),
        (State.ESTABLISHED, Event.RQ_RECEIVED, Action.AA_8),
        (State.ESTABLISHED, Event.RELEASE_RP_RECEIVED, Action.AA_8),
        (State.AWAITING_LOCAL_RELEASE_RESPONSE, Event.P_DATA_RECEIVED, Action.AA_8),
        (State.COLLISION_ACCEPTOR_AWAITING_RP, Event.P_DATA_RECEIVED, Action.AA_8),
        (State.CLOSING, Event.RQ_RECEIVED, Action.AA_7),
        (State.CLOSING, Event.INVALID_PDU, Action.AA_7),
    ],
)
def test_illegal_pdus_are_aborted(state, event, action) -> None:
    assert step(state, event) == (action, State.CLOSING)
    assert action in ABORTS


def test_pdus_after_the_association_are_ignored_until_the_close() -> None:
    for event in (Event.P_DATA_RECEIVED, Event.RELEASE_RQ_RECEIVED, Event.AC_RECEIVED):
        assert step(State.CLOSING, event) == (Action.AA_6, State.CLOSING)
    assert step(State.CLOSING, Event.ABORT_RECEIVED) == (Action.AA_2, State.CLOSED)


def test_abort_received_closes() -> None:
    for state in (State.AWAITING_LOCAL_RESPONSE, State.ESTABLISHED, State.AWAITING_RELEASE_RP):
        assert step(state, Event.ABORT_RECEIVED) == (Action.AA_3, State.CLOSED)


def test_local_abort_and_our_extensions() -> None:
    assert step(State.ESTABLISHED, Event.ABORT_REQUEST) == (Action.AA_1, State.CLOSING)
    assert step(State.AWAITING_TRANSPORT_OPEN, Event.ABORT_REQUEST) == (Action.AA_2, State.CLOSED)
    assert set(fsm.EXTENSIONS) == {
        (State.AWAITING_RQ, Event.ABORT_REQUEST),
        (State.CLOSING, Event.ABORT_REQUEST),
    }


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (State.AWAITING_RELEASE_RP, Event.P_DATA_REQUEST),  # no P-DATA after our release
        (State.AWAITING_LOCAL_RESPONSE, Event.RELEASE_REQUEST),
        (State.CLOSED, Event.ABORT_REQUEST),
        (State.CLOSING, Event.RELEASE_RESPONSE),
        (State.CLOSED, Event.AC_RECEIVED),
    ],
)
def test_impossible_local_events_raise(state, event) -> None:
    assert not fsm.allows(state, event)
    with pytest.raises(fsm.InvalidTransition):
        step(state, event)


def test_refused_from_the_header() -> None:
    assert fsm.refuses_pdu(State.AWAITING_RQ, 0x04)  # P-DATA before the RQ
    assert fsm.refuses_pdu(State.AWAITING_AC, 0x04)
    assert not fsm.refuses_pdu(State.AWAITING_RQ, 0x01)
    assert not fsm.refuses_pdu(State.AWAITING_RQ, 0x07)
    assert not fsm.refuses_pdu(State.ESTABLISHED, 0x04)
    assert not fsm.refuses_pdu(State.CLOSING, 0x04)  # AA-6: ignored
    assert fsm.refuses_pdu(State.ESTABLISHED, 0x09)  # unrecognised: Evt19
