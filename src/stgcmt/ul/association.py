"""One association over one transport: the asyncio protocol that does the I/O of the PS3.8
state machine. The table in :mod:`.fsm` decides; this module turns transport events, timers
and local calls into :class:`~.fsm.Event` s and carries out the :class:`~.fsm.Action` the
table names (the DIMSE half is :mod:`.exchange`).

Where we do more than PS3.8 says: an invalid or unexpected PDU is refused from its 6-byte
header whenever the table answers its type with an A-ABORT in the current state, before its
body is buffered. What each action does is :mod:`.actions`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Awaitable, Callable
from typing import Any, cast

from stgcmt.config import Timeouts
from stgcmt.ul import fsm, sockets
from stgcmt.ul.acse import PresentationContext
from stgcmt.ul.actions import ACTIONS, Abort, AssociationActions
from stgcmt.ul.dimse import DEFAULT_MAX_DATA_SET_BYTES, MessageAssembler
from stgcmt.ul.exchange import CLOSED, ServiceUser, resolve
from stgcmt.ul.fsm import Action, Event, State
from stgcmt.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_AC_TYPE,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_ASSOCIATE_RQ_TYPE,
    P_DATA_TF_TYPE,
    decode_pdu,
)
from stgcmt.ul.pdu_items import (
    ABORT_SERVICE_PROVIDER,
    REASON_INVALID_PDU_PARAMETER,
    REASON_UNEXPECTED_PDU,
    REASON_UNRECOGNIZED_PDU,
    PDUError,
)
from stgcmt.ul.pdu_reader import MAX_ASSOCIATE_PDU, MAX_SMALL_PDU, PDUReader
from stgcmt.ul.registry import Registry

__all__ = ["DEFAULT_MAX_PDU", "Negotiator", "State", "UpperLayer", "advertised_max_pdu"]

log = logging.getLogger("stgcmt.engine")

DEFAULT_MAX_PDU = 65536
"""The Maximum Length we advertise when told 0: we never advertise "unlimited", since that
would oblige us to buffer any P-DATA-TF a peer cares to announce."""
_BEFORE_ASSOCIATION = (State.AWAITING_RQ, State.AWAITING_LOCAL_RESPONSE, State.AWAITING_AC)


def advertised_max_pdu(max_pdu: int) -> int:
    """What we put in our Maximum Length sub-item for a configured ``max_pdu``."""
    return max_pdu if max_pdu > 0 else DEFAULT_MAX_PDU


Negotiator = Callable[["UpperLayer", A_ASSOCIATE_RQ], Awaitable[A_ASSOCIATE_AC | A_ASSOCIATE_RJ]]
"""Decides an acceptor's answer to an A-ASSOCIATE-RQ (and attaches the service user)."""


class UpperLayer(AssociationActions, asyncio.Protocol):
    """An association: as requester when built with the ``request`` to send (and the ``user``
    answering what the acceptor sends us), else as acceptor, whose ``negotiator`` answers the
    A-ASSOCIATE-RQ and sets :attr:`user`."""

    def __init__(
        self,
        timeouts: Timeouts,
        *,
        request: A_ASSOCIATE_RQ | None = None,
        user: ServiceUser | None = None,
        negotiator: Negotiator | None = None,
        registry: Registry[UpperLayer] | None = None,
        max_pdu: int = DEFAULT_MAX_PDU,
        max_data_set: int = DEFAULT_MAX_DATA_SET_BYTES,
    ) -> None:
        """``registry`` holds the association from connection until :attr:`finished`;
        ``max_pdu`` is the Maximum Length we advertise (a requester's is in its ``request``):
        a P-DATA-TF longer than that is aborted from its header."""
        self.timeouts = timeouts
        self.is_requester = request is not None
        self.user = user
        self._request = request
        self._negotiator = negotiator
        self._registry = registry
        self.state = State.CLOSED
        self.contexts: dict[int, PresentationContext] = {}
        self.peer_max_pdu = 0
        self.max_pdu = request.user_information.maximum_length if request else max_pdu
        self.address: tuple[str, int] = ("", 0)
        self._loop = asyncio.get_running_loop()
        self.associated: asyncio.Future[A_ASSOCIATE_AC | A_ASSOCIATE_RJ | A_ABORT | None]
        self.associated = self._loop.create_future()
        self.finished: asyncio.Future[None] = self._loop.create_future()
        """Done once the association is over and its service user has been told."""
        self._transport: asyncio.Transport | None = None
        self._socket: Any = None  # the transport's socket, for its TCP options
        self._early: list[bytes] = []
        self._reader = PDUReader(self._check_header)
        self._assembler = MessageAssembler(max_data_set, self._streams)
        self._max_data_set = max_data_set
        self._queued = 0  # requests received, not yet answered
        self._streaming = 0  # bytes of a streamed data set waiting for the service thread
        self._paused = False
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._serving = False
        self._pending = {}
        self._message_id = 0
        self._send_lock = asyncio.Lock()
        self._writable = asyncio.Event()
        self._writable.set()
        self._released: asyncio.Future[None] = self._loop.create_future()
        self._artim: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_activity = self._loop.time()
        self._pdu_since: float | None = None  # when the first byte of an incomplete PDU came
        if self.is_requester:
            self._event(Event.ASSOCIATE_REQUEST)  # AE-1: the caller opens the connection

    # -- the table -----------------------------------------------------------------------------

    def _event(self, event: Event, payload: Any = None) -> None:
        """Move to the state the table names, then carry out its action (which may raise a
        follow-up event of its own)."""
        action, after = fsm.step(self.state, event)
        if action is Action.AR_8:
            after = fsm.collision_state(self.is_requester)
        self.state = after
        ACTIONS[action](self, payload)

    # -- transport events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always a subclass of asyncio.Transport (uvloop's)
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._socket = transport.get_extra_info("socket")
        sockets.tune(self._socket)
        peername = transport.get_extra_info("peername") or ("", 0)
        self.address = (str(peername[0]), int(peername[1]))
        if self.is_requester:
            self._event(Event.TRANSPORT_CONFIRM)
        else:
            self._event(Event.TRANSPORT_INDICATION)
        self._watch_idle()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def drop(self, why: str) -> None:
        """Close a connection that has not associated (the registry needs its slot): its
        ARTIM cut short."""
        log.warning("%s: no A-ASSOCIATE-RQ yet, %s", self, why)
        if fsm.allows(self.state, Event.ARTIM_EXPIRED):
            self._event(Event.ARTIM_EXPIRED)
        else:
            self._close_transport()

    def data_received(self, data: bytes) -> None:
        sockets.rearm_quickack(self._socket)
        if self._transport is None:  # TLS: bytes may come before start_tls hands us over
            self._early.append(data)
            return
        if self.state is State.CLOSED:
            return
        now = self._loop.time()
        completed = False
        try:
            for pdu_type, body in self._reader.feed(data):
                completed = True
                self._last_activity = now
                self._on_pdu(pdu_type, body)
                if self.state in (State.CLOSING, State.CLOSED):
                    break
        except PDUError as exc:
            log.warning("%s: malformed PDU (%s): aborting", self, exc)
            self._reader.clear()
            if self.state is not State.CLOSED:
                self._event(Event.INVALID_PDU, Abort(ABORT_SERVICE_PROVIDER, exc.reason))
            return
        self._time_pdu(now, completed)

    def _on_pdu(self, pdu_type: int, body: bytes) -> None:
        event = fsm.PDU_EVENTS[pdu_type]  # the header check refused any other type
        action, _ = fsm.step(self.state, event)
        if action in fsm.ABORTS:
            raise PDUError(
                f"unexpected PDU type 0x{pdu_type:02X} in {self.state.name}", REASON_UNEXPECTED_PDU
            )
        if pdu_type == P_DATA_TF_TYPE:
            self._event(event, body)  # DT-2 / AR-6 decode it, or AA-6 ignores it
        else:
            self._event(event, decode_pdu(pdu_type, body))

    def _time_pdu(self, now: float, completed: bool) -> None:
        """Start the PDU deadline at the first byte of a PDU; only a whole PDU ends it."""
        if not self._reader.partial:
            self._pdu_since = None
        elif completed or self._pdu_since is None:
            first = self._pdu_since is None
            self._pdu_since = now
            if first:
                self._watch_idle()

    def _check_header(self, pdu_type: int, length: int) -> None:
        """Refuse a PDU from its 6-byte header, before its body is buffered: one the table
        answers with an A-ABORT in this state, or longer than it may be (PS3.8 9.3.1, D.1)."""
        if pdu_type == P_DATA_TF_TYPE:
            limit = self.max_pdu
        elif pdu_type in (A_ASSOCIATE_RQ_TYPE, A_ASSOCIATE_AC_TYPE):
            limit = MAX_ASSOCIATE_PDU
        elif pdu_type in fsm.PDU_EVENTS:
            limit = MAX_SMALL_PDU
        else:
            raise PDUError(f"unrecognised PDU type 0x{pdu_type:02X}", REASON_UNRECOGNIZED_PDU)
        if fsm.refuses_pdu(self.state, pdu_type):
            if pdu_type == P_DATA_TF_TYPE and self.state in _BEFORE_ASSOCIATION:
                unexpected = "P-DATA-TF before the association"
            elif self.state is State.AWAITING_RQ:
                unexpected = f"PDU type 0x{pdu_type:02X} before A-ASSOCIATE-RQ"
            else:
                unexpected = f"PDU type 0x{pdu_type:02X} unexpected in {self.state.name}"
            raise PDUError(unexpected, REASON_UNEXPECTED_PDU)
        if limit and length > limit:
            what = "P-DATA-TF" if pdu_type == P_DATA_TF_TYPE else f"PDU type 0x{pdu_type:02X}"
            raise PDUError(
                f"{what} of {length} bytes exceeds our maximum of {limit}"
                if pdu_type == P_DATA_TF_TYPE
                else f"{what} of {length} bytes (at most {limit})",
                REASON_INVALID_PDU_PARAMETER,
            )

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if fsm.allows(self.state, Event.TRANSPORT_CLOSED):
            self._event(Event.TRANSPORT_CLOSED)  # AA-4 / AA-5 / AR-5
        self.state = State.CLOSED
        self._reader.clear()  # nothing a peer sent outlives its connection
        self._assembler.clear()
        self._writable.set()
        for timer in (self._artim, self._idle):
            if timer is not None:
                timer.cancel()
        self._fail_pending()
        resolve(self.associated, None)
        resolve(self._released, None)
        if self._serving:
            self._inbox.put(CLOSED)  # the service thread ends after earlier requests
        else:
            self._finish()

    def _finish(self) -> None:
        """Over, and the service user told: only now does the association stop counting."""
        if self._registry is not None:
            self._registry.discard(self)
        resolve(self.finished, None)

    def __str__(self) -> str:
        return f"association with {self.address[0]}:{self.address[1]}"

    # -- timers --------------------------------------------------------------------------------

    def _start_artim(self, seconds: float | None = None) -> None:
        """ARTIM (PS3.8 §9.1.5): bounds waiting for an A-ASSOCIATE-RQ (``associate_rq``, short:
        a silent connection holds a pending slot), and for the peer to close the transport
        once the association is over (``acse``)."""
        self._stop_artim()
        self._artim = self._loop.call_later(seconds or self.timeouts.acse, self._on_artim)

    def _stop_artim(self) -> None:
        if self._artim is not None:
            self._artim.cancel()

    @property
    def _rq_deadline(self) -> float:
        """Seconds a new connection has to send its A-ASSOCIATE-RQ: ARTIM, or shorter."""
        return min(self.timeouts.acse, self.timeouts.associate_rq)

    def _on_artim(self) -> None:
        if self.state is State.AWAITING_RQ:
            log.warning("%s: no A-ASSOCIATE-RQ within %g s: closing", self, self._rq_deadline)
        if fsm.allows(self.state, Event.ARTIM_EXPIRED):
            self._event(Event.ARTIM_EXPIRED)
        else:
            self._close_transport()

    def _watch_idle(self) -> None:
        """One timer for two deadlines: a PDU must arrive whole within ``timeouts.pdu`` of its
        first byte, and some whole PDU within ``timeouts.network``; a trickle of bytes resets
        neither. Not while we stopped reading ourselves."""
        if self._idle is not None:
            self._idle.cancel()
        if self.state is State.CLOSED:
            return
        now = self._loop.time()
        if self._paused:
            self._last_activity = now
            self._pdu_since = None if self._pdu_since is None else now
        if self._pdu_since is not None and now - self._pdu_since >= self.timeouts.pdu:
            log.warning(
                "%s: a PDU did not arrive whole within %.0f s: aborting", self, self.timeouts.pdu
            )
            self.abort(ABORT_SERVICE_PROVIDER)
            return
        if now - self._last_activity >= self.timeouts.network:
            log.warning("%s: no PDU for %.0f s: aborting", self, self.timeouts.network)
            self.abort()
            return
        deadline = self._last_activity + self.timeouts.network
        if self._pdu_since is not None:
            deadline = min(deadline, self._pdu_since + self.timeouts.pdu)
        self._idle = self._loop.call_later(max(deadline - now, 0.05), self._watch_idle)

    # -- local primitives ----------------------------------------------------------------------

    @property
    def is_established(self) -> bool:
        return self.state is State.ESTABLISHED

    async def release(self) -> None:
        """A-RELEASE (PS3.8 §7.2): ask, wait for the answer (ARTIM-bounded), close."""
        if not fsm.allows(self.state, Event.RELEASE_REQUEST):
            return
        self._event(Event.RELEASE_REQUEST)
        try:
            async with asyncio.timeout(self.timeouts.acse):
                await self._released
        except TimeoutError:
            log.warning("%s: no A-RELEASE-RP within %.0f s: aborting", self, self.timeouts.acse)
            self.abort()

    async def _answer_release(self) -> None:
        async with self._send_lock:  # after the responses before it
            if self.state is State.AWAITING_LOCAL_RELEASE_RESPONSE:
                self._event(Event.RELEASE_RESPONSE)

    def abort(self, source: int = 0, reason: int = 0) -> None:
        """A-ABORT: tell the peer (unless it is gone), then close."""
        if fsm.allows(self.state, Event.ABORT_REQUEST):
            self._event(Event.ABORT_REQUEST, Abort(source, reason))
        else:
            self._close_transport()

    async def _answer_rq(self, negotiator: Negotiator, rq: A_ASSOCIATE_RQ) -> None:
        try:
            answer = await negotiator(self, rq)
        except Exception:
            log.exception("%s: cannot decide on the association request", self)
            self.abort()
            return
        if self.state is not State.AWAITING_LOCAL_RESPONSE:
            return  # aborted meanwhile
        if isinstance(answer, A_ASSOCIATE_RJ):
            self._event(Event.ASSOCIATE_REJECT, answer)
        else:
            self._event(Event.ASSOCIATE_ACCEPT, (rq, answer))
