"""One association over one transport: the upper layer state machine (PS3.8 §9.2) as an
asyncio protocol, with DIMSE message exchange on top.

Everything here runs on the engine's event loop, except service code: each association has a
thread that hands its received requests to the :class:`ServiceUser` one at a time (so responses
leave in the order requests came; handlers may block on SQLite or fsync) while the loop keeps
reading. A dedicated thread costs a third of a thread-pool round trip per message.

States, named after PS3.8 Table 9-10 (collision states folded into a flag)::

    AWAITING_RQ (Sta2) -> AWAITING_LOCAL_RESPONSE (Sta3) -> ESTABLISHED (Sta6)
    AWAITING_AC (Sta5) -------------------------------------^
    ESTABLISHED -> AWAITING_RELEASE_RP (Sta7, Sta9-12) | PEER_RELEASING (Sta8) -> CLOSING (Sta13)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Timeouts
from .acse import PresentationContext, agreed_contexts
from .dimse import (
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    CommandField,
    CommandSet,
    Message,
    MessageAssembler,
    encode_command_set,
    fragments,
    is_response,
    response_to,
)
from .pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_AC_TYPE,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RJ_TYPE,
    A_ASSOCIATE_RQ,
    A_ASSOCIATE_RQ_TYPE,
    A_RELEASE_RP,
    A_RELEASE_RP_TYPE,
    A_RELEASE_RQ,
    A_RELEASE_RQ_TYPE,
    ABORT_SERVICE_PROVIDER,
    P_DATA_TF,
    P_DATA_TF_TYPE,
    REASON_UNEXPECTED_PDU,
    PDUError,
    PDUReader,
    decode_pdu,
)

log = logging.getLogger("stgcmt.engine")

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
FLUSH_BYTES = 1 << 20
"""Bytes of a message written before waiting for the transport to drain."""


class State(enum.Enum):
    AWAITING_RQ = "Sta2"
    AWAITING_LOCAL_RESPONSE = "Sta3"
    AWAITING_AC = "Sta5"
    ESTABLISHED = "Sta6"
    AWAITING_RELEASE_RP = "Sta7"
    PEER_RELEASING = "Sta8"
    CLOSING = "Sta13"
    CLOSED = "Sta1"


_CAN_ANSWER = (State.ESTABLISHED, State.PEER_RELEASING)
_RECEIVES_DATA = (State.ESTABLISHED, State.AWAITING_RELEASE_RP)


@dataclass
class Answer:
    """A service's answer to a request: the status, an encoded data set to return, and what to
    do once the response has been handed to the transport."""

    status: int
    data_set: bytes | None = None
    after: Callable[[], None] | None = None


class ServiceUser(Protocol):
    """What the association asks of the services above it (called in its thread)."""

    def handle(self, message: Message) -> Answer: ...

    def closed(self) -> None: ...


Negotiator = Callable[["UpperLayer", A_ASSOCIATE_RQ], Awaitable[A_ASSOCIATE_AC | A_ASSOCIATE_RJ]]
"""Decides an acceptor's answer to an A-ASSOCIATE-RQ (and attaches the service user)."""

_RELEASE = object()
_CLOSED = object()


class UpperLayer(asyncio.Protocol):
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
        registry: set[UpperLayer] | None = None,
    ) -> None:
        """``registry`` holds the association from connection until :attr:`finished`."""
        self.timeouts = timeouts
        self.is_requester = request is not None
        self.user = user
        self._request = request
        self._negotiator = negotiator
        self._registry = registry
        self.state = State.AWAITING_AC if self.is_requester else State.AWAITING_RQ
        self.contexts: dict[int, PresentationContext] = {}
        self.peer_max_pdu = 0
        self.address: tuple[str, int] = ("", 0)
        self._loop = asyncio.get_running_loop()
        self.associated: asyncio.Future[A_ASSOCIATE_AC | A_ASSOCIATE_RJ | A_ABORT | None]
        self.associated = self._loop.create_future()
        self.finished: asyncio.Future[None] = self._loop.create_future()
        """Done once the association is over and its service user has been told."""
        self._transport: asyncio.Transport | None = None
        self._reader = PDUReader()
        self._assembler = MessageAssembler()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._serving = False
        self._pending: dict[int, asyncio.Future[Message | None]] = {}
        self._message_id = 0
        self._send_lock = asyncio.Lock()
        self._writable = asyncio.Event()
        self._writable.set()
        self._released: asyncio.Future[None] = self._loop.create_future()
        self._collision = False
        self._artim: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_activity = self._loop.time()

    # -- transport events --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peername = transport.get_extra_info("peername") or ("", 0)
        self.address = (str(peername[0]), int(peername[1]))
        if self._registry is not None:
            self._registry.add(self)
        if self._request is not None:
            self._write(self._request.encode())
        else:
            self._start_artim()
        self._watch_idle()

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        try:
            for pdu_type, body in self._reader.feed(data):
                self._on_pdu(pdu_type, body)
                if self.state in (State.CLOSING, State.CLOSED):
                    break
        except PDUError as exc:
            log.warning("%s: malformed PDU (%s): aborting", self, exc)
            self.abort(ABORT_SERVICE_PROVIDER, exc.reason)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self._writable.set()
        for timer in (self._artim, self._idle):
            if timer is not None:
                timer.cancel()
        self._fail_pending()
        _resolve(self.associated, None)
        _resolve(self._released, None)
        if self._serving:
            self._inbox.put(_CLOSED)  # the service thread ends after earlier requests
        else:
            self._finish()

    def _finish(self) -> None:
        """Over, and the service user told: only now does the association stop counting."""
        if self._registry is not None:
            self._registry.discard(self)
        _resolve(self.finished, None)

    def __str__(self) -> str:
        return f"association with {self.address[0]}:{self.address[1]}"

    # -- timers ------------------------------------------------------------------------------

    def _start_artim(self) -> None:
        """ARTIM (PS3.8 §9.1.5): bounds waiting for an A-ASSOCIATE-RQ, and for the peer to
        close the transport once the association is over."""
        if self._artim is not None:
            self._artim.cancel()
        self._artim = self._loop.call_later(self.timeouts.acse, self._close_transport)

    def _watch_idle(self) -> None:
        """Abort an association on which nothing arrives for the network timeout."""
        remaining = self._last_activity + self.timeouts.network - self._loop.time()
        if remaining <= 0 and self.state is not State.CLOSED:
            log.warning("%s: idle for %.0f s: aborting", self, self.timeouts.network)
            self.abort()
            return
        self._idle = self._loop.call_later(max(remaining, 0.1), self._watch_idle)

    # -- receiving ---------------------------------------------------------------------------

    def _on_pdu(self, pdu_type: int, body: bytes) -> None:
        if pdu_type == P_DATA_TF_TYPE and self.state in _RECEIVES_DATA:
            self._on_p_data(P_DATA_TF.decode(body))
            return
        pdu = decode_pdu(pdu_type, body)
        if isinstance(pdu, A_ABORT):
            self._on_abort(pdu)
        elif self.state is State.CLOSING:
            pass  # AA-6/AA-7: ignored while awaiting the transport to close
        elif pdu_type == A_ASSOCIATE_RQ_TYPE and self.state is State.AWAITING_RQ:
            self._on_associate_rq(pdu)  # type: ignore[arg-type]
        elif pdu_type in (A_ASSOCIATE_AC_TYPE, A_ASSOCIATE_RJ_TYPE) and (
            self.state is State.AWAITING_AC
        ):
            self._on_associate_answer(pdu)  # type: ignore[arg-type]
        elif pdu_type == A_RELEASE_RQ_TYPE and self.state in _RECEIVES_DATA:
            self._on_release_rq()
        elif pdu_type == A_RELEASE_RP_TYPE and self.state is State.AWAITING_RELEASE_RP:
            self._on_release_rp()
        else:
            unexpected = f"unexpected {type(pdu).__name__} in {self.state.name}"
            raise PDUError(unexpected, REASON_UNEXPECTED_PDU)

    def _on_p_data(self, pdu: P_DATA_TF) -> None:
        for pdv in pdu.items:
            if pdv.context_id not in self.contexts:
                raise PDUError(f"presentation context {pdv.context_id} was not accepted")
            message = self._assembler.feed(pdv)
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: Message) -> None:
        if not is_response(message.command):
            self._inbox.put(message)
            return
        waiter = self._pending.get(int(message.command.get(MESSAGE_ID_BEING_RESPONDED_TO, -1)))
        if waiter is None:
            log.warning("%s: unexpected response 0x%04X ignored", self, message.command_field)
        else:
            _resolve(waiter, message)

    def _on_abort(self, pdu: A_ABORT) -> None:
        log.info("%s: aborted by the peer (source %d, reason %d)", self, pdu.source, pdu.reason)
        _resolve(self.associated, pdu)
        self._close_transport()

    # -- association establishment -------------------------------------------------------------

    def _on_associate_rq(self, rq: A_ASSOCIATE_RQ) -> None:
        assert self._negotiator is not None
        if self._artim is not None:
            self._artim.cancel()
        self.state = State.AWAITING_LOCAL_RESPONSE
        self.peer_max_pdu = rq.user_information.maximum_length
        self._loop.create_task(self._answer_rq(self._negotiator, rq))

    async def _answer_rq(self, negotiator: Negotiator, rq: A_ASSOCIATE_RQ) -> None:
        try:
            answer = await negotiator(self, rq)
        except Exception:
            log.exception("%s: cannot decide on the association request", self)
            self.abort()
            return
        if self.state is not State.AWAITING_LOCAL_RESPONSE:
            return  # aborted meanwhile
        self._write(answer.encode())
        if isinstance(answer, A_ASSOCIATE_RJ):
            self._close_transport()
            return
        self._establish(agreed_contexts(rq.presentation_contexts, answer.presentation_contexts))

    def _on_associate_answer(self, answer: A_ASSOCIATE_AC | A_ASSOCIATE_RJ) -> None:
        assert self._request is not None
        if isinstance(answer, A_ASSOCIATE_AC):
            self.peer_max_pdu = answer.user_information.maximum_length
            proposed = self._request.presentation_contexts
            self._establish(agreed_contexts(proposed, answer.presentation_contexts))
        else:
            self._close_transport()
        _resolve(self.associated, answer)

    def _establish(self, contexts: dict[int, PresentationContext]) -> None:
        assert self.user is not None
        self.contexts = contexts
        self.state = State.ESTABLISHED
        self._serving = True
        name = f"stgcmt-association-{self.address[1]}"
        threading.Thread(target=self._serve, args=(self.user,), name=name, daemon=True).start()

    @property
    def is_established(self) -> bool:
        return self.state is State.ESTABLISHED

    # -- answering requests (in the association's thread) ---------------------------------------

    def _serve(self, user: ServiceUser) -> None:
        try:
            while (item := self._inbox.get()) is not _CLOSED:
                if item is _RELEASE:
                    self._soon(self._answer_release())
                else:
                    assert isinstance(item, Message)
                    self._answer(user, item)
            user.closed()
        except Exception:
            log.exception("%s: the service failed", self)
        finally:
            self._loop.call_soon_threadsafe(self._finish)

    def _answer(self, user: ServiceUser, message: Message) -> None:
        if message.command_field == CommandField.C_ECHO_RQ:
            answer = Answer(SUCCESS)
        else:
            answer = _handle(user, message)
        respond = self._respond(message, answer)
        if answer.after is None:
            self._soon(respond)
        elif asyncio.run_coroutine_threadsafe(respond, self._loop).result():
            answer.after()

    def _soon(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Run ``coroutine`` on the loop, after everything scheduled before it."""
        self._loop.call_soon_threadsafe(self._loop.create_task, coroutine)

    async def _respond(self, message: Message, answer: Answer) -> bool:
        """Send the response; False if the association can no longer carry it."""
        if self.state not in _CAN_ANSWER:
            return False  # PS3.8 allows no P-DATA in Sta7 or later; the peer stopped listening
        command = response_to(message.command, answer.status, with_data_set=bool(answer.data_set))
        data = (answer.data_set,) if answer.data_set else ()
        try:
            await self._send(message.context_id, command, data)
        except ConnectionError:
            return False
        return True

    # -- sending -------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _send(self, context_id: int, command: CommandSet, data_set: Iterable[bytes]) -> None:
        """Write one message, never interleaved with another (PS3.7 §9.3.1 / PS3.8 E.2)."""
        async with self._send_lock:
            pending: list[bytes | memoryview] = []
            size = 0
            encoded = encode_command_set(command)
            for piece in fragments(context_id, encoded, data_set, self.peer_max_pdu):
                pending.append(piece)
                size += len(piece)
                if size >= FLUSH_BYTES:
                    self._write_all(pending)
                    pending, size = [], 0
                    await self._writable.wait()
            self._write_all(pending)

    def _write_all(self, pieces: list[bytes | memoryview]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionError("the association is closed")
        transport.writelines(pieces)

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    async def request(
        self, context_id: int, command: CommandSet, data_set: Iterable[bytes] = ()
    ) -> Message | None:
        """Send a request and wait for its response; None if none came: the association was
        closed, or the DIMSE timeout passed (the association is then aborted)."""
        if self.state is not State.ESTABLISHED:
            return None
        message_id = self._next_message_id()
        command[MESSAGE_ID] = message_id
        response = self._pending[message_id] = self._loop.create_future()
        try:
            async with asyncio.timeout(self.timeouts.dimse):
                await self._send(context_id, command, data_set)
                return await response
        except TimeoutError:
            log.warning("%s: no response within %.0f s: aborting", self, self.timeouts.dimse)
            self.abort()
            return None
        except ConnectionError:
            return None
        finally:
            self._pending.pop(message_id, None)

    def _fail_pending(self) -> None:
        for waiter in self._pending.values():
            _resolve(waiter, None)

    # -- release and abort ---------------------------------------------------------------------

    async def release(self) -> None:
        """A-RELEASE (PS3.8 §7.2): ask, wait for the answer (ARTIM-bounded), close."""
        if self.state is not State.ESTABLISHED:
            return
        self.state = State.AWAITING_RELEASE_RP
        self._write(A_RELEASE_RQ().encode())
        try:
            async with asyncio.timeout(self.timeouts.acse):
                await self._released
        except TimeoutError:
            log.warning("%s: no A-RELEASE-RP within %.0f s: aborting", self, self.timeouts.acse)
            self.abort()

    def _on_release_rq(self) -> None:
        if self.state is State.AWAITING_RELEASE_RP:
            self._collision = True  # both asked at once (PS3.8 §7.2.3)
            if self.is_requester:
                self._write(A_RELEASE_RP().encode())  # Sta9 -> Sta11
            return
        self.state = State.PEER_RELEASING
        self._fail_pending()  # a peer that releases answers nothing more
        self._inbox.put(_RELEASE)  # answered once earlier requests are

    async def _answer_release(self) -> None:
        async with self._send_lock:  # after the responses before it
            if self.state is State.PEER_RELEASING:
                self._write(A_RELEASE_RP().encode())
                self.state = State.CLOSING
                self._start_artim()

    def _on_release_rp(self) -> None:
        _resolve(self._released, None)
        if self._collision and not self.is_requester:
            self._write(A_RELEASE_RP().encode())  # Sta12 -> Sta13: the requester closes
            self.state = State.CLOSING
            self._start_artim()
        else:
            self._close_transport()

    def abort(self, source: int = 0, reason: int = 0) -> None:
        """A-ABORT: tell the peer (unless it is gone), then close."""
        self._write(A_ABORT(source, reason).encode())
        self._close_transport()

    def _close_transport(self) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSING
        if self._transport is not None:
            self._transport.close()


def _handle(user: ServiceUser, message: Message) -> Answer:
    try:
        return user.handle(message)
    except Exception:
        log.exception("request 0x%04X could not be handled", message.command_field)
        return Answer(PROCESSING_FAILURE)


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)
