"""The upper layer state machine of PS3.8 §9.2 as a table, without I/O (sans-IO).

:data:`TRANSITIONS` is PS3.8 Table 9-10: for each (state, event) the action to take and the
state that follows. The asyncio protocol (:mod:`.association`) turns transport bytes, timers
and local calls into :class:`Event` s, asks :func:`step` what to do, and does it; nothing here
reads a socket. A (state, event) pair that is not in the table cannot happen in that state:
for a PDU from the peer the table always has an answer (often AA-1 or AA-8: A-ABORT), for a
local primitive :func:`step` raises :class:`InvalidTransition` and the caller refuses the call.

Where the standard leaves a choice the action makes it and says so by a follow-up event:
AE-6 may answer "reject" at once (Evt8) when the peer's Maximum Length cannot carry a fragment,
and AR-8 (release collision) leads to Sta9 for the association-requester and Sta10 for the
acceptor (:func:`collision_state`).

Two local extensions, both A-ABORT request primitives (Evt15) the standard does not list:
in Sta2 (our PDU and network timers may end a connection that has not associated) and in
Sta13 (a timer firing while we wait for the peer to close). Both are :data:`EXTENSIONS`.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    """PS3.8 Table 9-10's states; the value is the standard's name."""

    CLOSED = "Sta1"
    """Idle: no transport connection (before it, or after it closed)."""
    AWAITING_RQ = "Sta2"
    """Transport connection open (awaiting A-ASSOCIATE-RQ PDU)."""
    AWAITING_LOCAL_RESPONSE = "Sta3"
    """Awaiting local A-ASSOCIATE response primitive."""
    AWAITING_TRANSPORT_OPEN = "Sta4"
    """Awaiting transport connection opening to complete."""
    AWAITING_AC = "Sta5"
    """Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU."""
    ESTABLISHED = "Sta6"
    """Association established and ready for data transfer."""
    AWAITING_RELEASE_RP = "Sta7"
    """Awaiting A-RELEASE-RP PDU."""
    AWAITING_LOCAL_RELEASE_RESPONSE = "Sta8"
    """Awaiting local A-RELEASE response primitive."""
    COLLISION_REQUESTER_AWAITING_LOCAL = "Sta9"
    """Release collision requester side: awaiting A-RELEASE response primitive."""
    COLLISION_ACCEPTOR_AWAITING_RP = "Sta10"
    """Release collision acceptor side: awaiting A-RELEASE-RP PDU."""
    COLLISION_REQUESTER_AWAITING_RP = "Sta11"
    """Release collision requester side: awaiting A-RELEASE-RP PDU."""
    COLLISION_ACCEPTOR_AWAITING_LOCAL = "Sta12"
    """Release collision acceptor side: awaiting A-RELEASE response primitive."""
    CLOSING = "Sta13"
    """Awaiting transport connection close indication (association no longer exists)."""


class Event(enum.Enum):
    """PS3.8 Table 9-10's events; the value is the standard's name."""

    ASSOCIATE_REQUEST = "Evt1"
    """A-ASSOCIATE request (local user)."""
    TRANSPORT_CONFIRM = "Evt2"
    """Transport connect confirmation (local transport service)."""
    AC_RECEIVED = "Evt3"
    """A-ASSOCIATE-AC PDU received."""
    RJ_RECEIVED = "Evt4"
    """A-ASSOCIATE-RJ PDU received."""
    TRANSPORT_INDICATION = "Evt5"
    """Transport connection indication (a peer connected to us)."""
    RQ_RECEIVED = "Evt6"
    """A-ASSOCIATE-RQ PDU received."""
    ASSOCIATE_ACCEPT = "Evt7"
    """A-ASSOCIATE response primitive (accept)."""
    ASSOCIATE_REJECT = "Evt8"
    """A-ASSOCIATE response primitive (reject)."""
    P_DATA_REQUEST = "Evt9"
    """P-DATA request primitive."""
    P_DATA_RECEIVED = "Evt10"
    """P-DATA-TF PDU received."""
    RELEASE_REQUEST = "Evt11"
    """A-RELEASE request primitive."""
    RELEASE_RQ_RECEIVED = "Evt12"
    """A-RELEASE-RQ PDU received."""
    RELEASE_RP_RECEIVED = "Evt13"
    """A-RELEASE-RP PDU received."""
    RELEASE_RESPONSE = "Evt14"
    """A-RELEASE response primitive."""
    ABORT_REQUEST = "Evt15"
    """A-ABORT request primitive."""
    ABORT_RECEIVED = "Evt16"
    """A-ABORT PDU received."""
    TRANSPORT_CLOSED = "Evt17"
    """Transport connection closed indication."""
    ARTIM_EXPIRED = "Evt18"
    """ARTIM timer expired (or, for a connection that has not associated, its pending slot
    was taken: ARTIM cut short)."""
    INVALID_PDU = "Evt19"
    """Unrecognized or invalid PDU received."""


class Action(enum.Enum):
    """PS3.8 §9.2 Table 9-6 to 9-9's actions; the value is the standard's name."""

    AE_1 = "AE-1"  # issue TRANSPORT CONNECT request primitive to local transport service
    AE_2 = "AE-2"  # send A-ASSOCIATE-RQ PDU
    AE_3 = "AE-3"  # issue A-ASSOCIATE confirmation (accept) primitive
    AE_4 = "AE-4"  # issue A-ASSOCIATE confirmation (reject) primitive, close transport
    AE_5 = "AE-5"  # issue transport connection response primitive; start ARTIM
    AE_6 = "AE-6"  # stop ARTIM; if acceptable issue A-ASSOCIATE indication, else reject
    AE_7 = "AE-7"  # send A-ASSOCIATE-AC PDU
    AE_8 = "AE-8"  # send A-ASSOCIATE-RJ PDU and start ARTIM
    DT_1 = "DT-1"  # send P-DATA-TF PDU
    DT_2 = "DT-2"  # send P-DATA indication primitive
    AR_1 = "AR-1"  # send A-RELEASE-RQ PDU
    AR_2 = "AR-2"  # issue A-RELEASE indication primitive
    AR_3 = "AR-3"  # issue A-RELEASE confirmation primitive, close transport
    AR_4 = "AR-4"  # issue A-RELEASE-RP PDU and start ARTIM
    AR_5 = "AR-5"  # stop ARTIM
    AR_6 = "AR-6"  # issue P-DATA indication
    AR_7 = "AR-7"  # issue P-DATA-TF PDU
    AR_8 = "AR-8"  # issue A-RELEASE indication (release collision)
    AR_9 = "AR-9"  # send A-RELEASE-RP PDU
    AR_10 = "AR-10"  # issue A-RELEASE confirmation primitive
    AA_1 = "AA-1"  # send A-ABORT PDU (service-user source), start (or restart) ARTIM
    AA_2 = "AA-2"  # stop ARTIM if running, close transport
    AA_3 = "AA-3"  # issue A-ABORT / A-P-ABORT indication, close transport
    AA_4 = "AA-4"  # issue A-P-ABORT indication primitive
    AA_5 = "AA-5"  # stop ARTIM
    AA_6 = "AA-6"  # ignore PDU
    AA_7 = "AA-7"  # send A-ABORT PDU
    AA_8 = "AA-8"  # send A-ABORT PDU (service-provider source), issue A-P-ABORT, start ARTIM


S = State
E = Event
A = Action

_ALL = tuple(State)
_CONNECTED = tuple(s for s in _ALL if s not in (S.CLOSED, S.AWAITING_TRANSPORT_OPEN))
"""Sta2, Sta3, Sta5 to Sta13: states with a transport a PDU can arrive on."""
_ASSOCIATING_OR_LATER = tuple(s for s in _CONNECTED if s not in (S.AWAITING_RQ, S.CLOSING))
"""Sta3, Sta5 to Sta12."""


def _pdu_row(
    event: Event, **own: tuple[Action, State]
) -> dict[tuple[State, Event], tuple[Action, State]]:
    """A PDU event's row: AA-1 in Sta2, AA-6 (ignore) in Sta13, AA-8 elsewhere, except the
    cells given by state name."""
    row: dict[tuple[State, Event], tuple[Action, State]] = {
        (S.AWAITING_RQ, event): (A.AA_1, S.CLOSING)
    }
    for state in _ASSOCIATING_OR_LATER:
        row[(state, event)] = (A.AA_8, S.CLOSING)
    row[(S.CLOSING, event)] = (A.AA_6, S.CLOSING)
    for name, cell in own.items():
        row[(State[name], event)] = cell
    return row


TRANSITIONS: dict[tuple[State, Event], tuple[Action, State]] = {
    # association establishment
    (S.CLOSED, E.ASSOCIATE_REQUEST): (A.AE_1, S.AWAITING_TRANSPORT_OPEN),
    (S.AWAITING_TRANSPORT_OPEN, E.TRANSPORT_CONFIRM): (A.AE_2, S.AWAITING_AC),
    **_pdu_row(E.AC_RECEIVED, AWAITING_AC=(A.AE_3, S.ESTABLISHED)),
    **_pdu_row(E.RJ_RECEIVED, AWAITING_AC=(A.AE_4, S.CLOSED)),
    (S.CLOSED, E.TRANSPORT_INDICATION): (A.AE_5, S.AWAITING_RQ),
    **_pdu_row(
        E.RQ_RECEIVED,
        AWAITING_RQ=(A.AE_6, S.AWAITING_LOCAL_RESPONSE),
        CLOSING=(A.AA_7, S.CLOSING),
    ),
    (S.AWAITING_LOCAL_RESPONSE, E.ASSOCIATE_ACCEPT): (A.AE_7, S.ESTABLISHED),
    (S.AWAITING_LOCAL_RESPONSE, E.ASSOCIATE_REJECT): (A.AE_8, S.CLOSING),
    # data transfer
    (S.ESTABLISHED, E.P_DATA_REQUEST): (A.DT_1, S.ESTABLISHED),
    (S.AWAITING_LOCAL_RELEASE_RESPONSE, E.P_DATA_REQUEST): (
        A.AR_7,
        S.AWAITING_LOCAL_RELEASE_RESPONSE,
    ),
    **_pdu_row(
        E.P_DATA_RECEIVED,
        ESTABLISHED=(A.DT_2, S.ESTABLISHED),
        AWAITING_RELEASE_RP=(A.AR_6, S.AWAITING_RELEASE_RP),
    ),
    # release
    (S.ESTABLISHED, E.RELEASE_REQUEST): (A.AR_1, S.AWAITING_RELEASE_RP),
    **_pdu_row(
        E.RELEASE_RQ_RECEIVED,
        ESTABLISHED=(A.AR_2, S.AWAITING_LOCAL_RELEASE_RESPONSE),
        # AR-8: Sta9 if we requested the association, else Sta10 (see collision_state)
        AWAITING_RELEASE_RP=(A.AR_8, S.COLLISION_REQUESTER_AWAITING_LOCAL),
    ),
    **_pdu_row(
        E.RELEASE_RP_RECEIVED,
        AWAITING_RELEASE_RP=(A.AR_3, S.CLOSED),
        COLLISION_ACCEPTOR_AWAITING_RP=(A.AR_10, S.COLLISION_ACCEPTOR_AWAITING_LOCAL),
        COLLISION_REQUESTER_AWAITING_RP=(A.AR_3, S.CLOSED),
    ),
    (S.AWAITING_LOCAL_RELEASE_RESPONSE, E.RELEASE_RESPONSE): (A.AR_4, S.CLOSING),
    (S.COLLISION_REQUESTER_AWAITING_LOCAL, E.RELEASE_RESPONSE): (
        A.AR_9,
        S.COLLISION_REQUESTER_AWAITING_RP,
    ),
    (S.COLLISION_ACCEPTOR_AWAITING_LOCAL, E.RELEASE_RESPONSE): (A.AR_4, S.CLOSING),
    # abort, transport and timers
    (S.AWAITING_TRANSPORT_OPEN, E.ABORT_REQUEST): (A.AA_2, S.CLOSED),
    **{(s, E.ABORT_REQUEST): (A.AA_1, S.CLOSING) for s in _ASSOCIATING_OR_LATER},
    (S.AWAITING_RQ, E.ABORT_RECEIVED): (A.AA_2, S.CLOSED),
    **{(s, E.ABORT_RECEIVED): (A.AA_3, S.CLOSED) for s in _ASSOCIATING_OR_LATER},
    (S.CLOSING, E.ABORT_RECEIVED): (A.AA_2, S.CLOSED),
    (S.AWAITING_RQ, E.TRANSPORT_CLOSED): (A.AA_5, S.CLOSED),
    (S.AWAITING_TRANSPORT_OPEN, E.TRANSPORT_CLOSED): (A.AA_4, S.CLOSED),
    **{(s, E.TRANSPORT_CLOSED): (A.AA_4, S.CLOSED) for s in _ASSOCIATING_OR_LATER},
    (S.CLOSING, E.TRANSPORT_CLOSED): (A.AR_5, S.CLOSED),
    (S.AWAITING_RQ, E.ARTIM_EXPIRED): (A.AA_2, S.CLOSED),
    (S.CLOSING, E.ARTIM_EXPIRED): (A.AA_2, S.CLOSED),
    (S.AWAITING_RQ, E.INVALID_PDU): (A.AA_1, S.CLOSING),
    **{(s, E.INVALID_PDU): (A.AA_8, S.CLOSING) for s in _ASSOCIATING_OR_LATER},
    (S.CLOSING, E.INVALID_PDU): (A.AA_7, S.CLOSING),
}
"""PS3.8 Table 9-10: (state, event) -> (action, next state)."""

STANDARD_CELLS = len(TRANSITIONS)

EXTENSIONS: dict[tuple[State, Event], tuple[Action, State]] = {
    (S.AWAITING_RQ, E.ABORT_REQUEST): (A.AA_1, S.CLOSING),
    (S.CLOSING, E.ABORT_REQUEST): (A.AA_1, S.CLOSING),
}
"""Our two cells the standard leaves empty (see the module docstring)."""

TRANSITIONS.update(EXTENSIONS)

ABORTS = frozenset({A.AA_1, A.AA_7, A.AA_8})
"""Actions that send an A-ABORT PDU."""

PDU_EVENTS: dict[int, Event] = {
    0x01: E.RQ_RECEIVED,
    0x02: E.AC_RECEIVED,
    0x03: E.RJ_RECEIVED,
    0x04: E.P_DATA_RECEIVED,
    0x05: E.RELEASE_RQ_RECEIVED,
    0x06: E.RELEASE_RP_RECEIVED,
    0x07: E.ABORT_RECEIVED,
}
"""The event a PDU type raises when it arrives (any other type is Evt19)."""


class InvalidTransition(KeyError):
    """An event that cannot happen in the state (an empty cell of Table 9-10)."""


def step(state: State, event: Event) -> tuple[Action, State]:
    """The action for ``event`` in ``state`` and the state after it."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        what = f"{event.value} ({event.name}) in {state.value} ({state.name})"
        raise InvalidTransition(what) from None


def allows(state: State, event: Event) -> bool:
    """Whether ``event`` has a cell in ``state`` (local primitives are refused otherwise)."""
    return (state, event) in TRANSITIONS


def collision_state(is_requester: bool) -> State:
    """AR-8's next state: Sta9 for the association-requester, Sta10 for the acceptor."""
    return (
        S.COLLISION_REQUESTER_AWAITING_LOCAL if is_requester else S.COLLISION_ACCEPTOR_AWAITING_RP
    )


def refuses_pdu(state: State, pdu_type: int) -> bool:
    """A PDU that ``state`` answers with an A-ABORT, decided from its type alone (so from its
    header, before any body is buffered)."""
    event = PDU_EVENTS.get(pdu_type, E.INVALID_PDU)
    cell = TRANSITIONS.get((state, event))
    return cell is not None and cell[0] in ABORTS
