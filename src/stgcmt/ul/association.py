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
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from stgcmt.config import Timeouts
from stgcmt.ul.acse import PresentationContext, agreed_contexts
from stgcmt.ul.dimse import (
    DEFAULT_MAX_DATA_SET_BYTES,
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
from stgcmt.ul.pdu import (
    A_ABORT,
    A_ABORT_TYPE,
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
    MAX_ASSOCIATE_PDU,
    MAX_SMALL_PDU,
    P_DATA_TF,
    P_DATA_TF_TYPE,
    PDV_HEADER_LENGTH,
    REASON_INVALID_PDU_PARAMETER,
    REASON_UNEXPECTED_PDU,
    REASON_UNRECOGNIZED_PDU,
    PDUError,
    PDUReader,
    decode_pdu,
)

log = logging.getLogger("stgcmt.engine")

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
"""C-STORE: Refused: Out of Resources (PS3.4 B.2.3)."""
RESOURCE_LIMITATION = 0x0213
"""N-ACTION, N-EVENT-REPORT: Resource limitation (PS3.7 C.5)."""
FLUSH_BYTES = 1 << 20
"""Bytes of a message written before waiting for the transport to drain."""
DEFAULT_MAX_PDU = 65536
"""The Maximum Length we advertise when told 0: we never advertise "unlimited", since that
would oblige us to buffer any P-DATA-TF a peer cares to announce."""
MAX_QUEUED_REQUESTS = 2
"""Requests received but not yet answered before we stop reading: without an Asynchronous
Operations Window a peer may have one outstanding, so this only stops a peer that ignores
that from piling data sets up in memory."""


def advertised_max_pdu(max_pdu: int) -> int:
    """What we put in our Maximum Length sub-item for a configured ``max_pdu``."""
    return max_pdu if max_pdu > 0 else DEFAULT_MAX_PDU


def max_pdu_too_small(max_pdu: int) -> bool:
    """A peer's Maximum Length that cannot carry one byte of a fragment (0 means unlimited)."""
    return 0 < max_pdu <= PDV_HEADER_LENGTH


def tls_reason(exc: BaseException) -> str:
    """A failed TLS handshake in words, without OpenSSL's bracketed codes and source lines."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        text = text.split("] ", 1)[-1]
        return text.split(" (_ssl.c", 1)[0].lower()
    if isinstance(exc, TimeoutError):
        return "no handshake within the timeout"
    if isinstance(exc, ConnectionError):
        return "the peer closed the connection (does it trust our certificate?)"
    return str(exc) or type(exc).__name__


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


class Pending(Protocol):
    """A connection that has not sent its A-ASSOCIATE-RQ yet (or not finished TLS)."""

    def drop(self, why: str) -> None: ...


class Registry:
    """A server's connections. Only associations whose A-ASSOCIATE-RQ has arrived are
    ``active`` (they count toward the association limit); connections still silent are
    ``pending``, oldest first, and past ``max_pending`` the oldest is dropped, so a flood of
    idle sockets delays nobody who really associates."""

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max(1, max_pending)
        self.pending: dict[Pending, None] = {}
        self.active: set[UpperLayer] = set()

    def add_pending(self, connection: Pending) -> None:
        self.pending[connection] = None
        while len(self.pending) > self.max_pending:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            oldest.drop(f"{self.max_pending} connections are waiting to associate: oldest dropped")

    def activate(self, association: UpperLayer) -> None:
        self.pending.pop(association, None)
        self.active.add(association)

    def discard(self, connection: object) -> None:
        self.pending.pop(connection, None)  # type: ignore[call-overload]
        self.active.discard(connection)  # type: ignore[arg-type]


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
        registry: Registry | None = None,
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
        self.state = State.AWAITING_AC if self.is_requester else State.AWAITING_RQ
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
        self._reader = PDUReader(self._check_header)
        self._assembler = MessageAssembler(max_data_set)
        self._max_data_set = max_data_set
        self._queued = 0  # requests received, not yet answered
        self._paused = False
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
        self._pdu_since: float | None = None  # when the first byte of an incomplete PDU came

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
        if self._request is not None:
            self._write(self._request.encode())
        else:
            if self._registry is not None:
                self._registry.add_pending(self)
            self._start_artim(self._rq_deadline)
        self._watch_idle()

    def drop(self, why: str) -> None:
        """Close a connection that has not associated (the registry needs its slot)."""
        log.warning("%s: no A-ASSOCIATE-RQ yet, %s", self, why)
        self._close_transport()

    def data_received(self, data: bytes) -> None:
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
            self.abort(ABORT_SERVICE_PROVIDER, exc.reason)
            return
        self._time_pdu(now, completed)

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
        """Refuse a PDU from its 6-byte header, before its body is buffered: one we cannot
        expect in this state, or longer than it may be (PS3.8 9.3.1, D.1)."""
        before = self.state in (State.AWAITING_RQ, State.AWAITING_AC, State.AWAITING_LOCAL_RESPONSE)
        if pdu_type == P_DATA_TF_TYPE:
            if before:
                raise PDUError("P-DATA-TF before the association", REASON_UNEXPECTED_PDU)
            if self.max_pdu and length > self.max_pdu:
                raise PDUError(
                    f"P-DATA-TF of {length} bytes exceeds our maximum of {self.max_pdu}",
                    REASON_INVALID_PDU_PARAMETER,
                )
            return
        if pdu_type in (A_ASSOCIATE_RQ_TYPE, A_ASSOCIATE_AC_TYPE):
            limit = MAX_ASSOCIATE_PDU
        elif A_ASSOCIATE_RJ_TYPE <= pdu_type <= A_ABORT_TYPE:
            limit = MAX_SMALL_PDU
        else:
            raise PDUError(f"unrecognised PDU type 0x{pdu_type:02X}", REASON_UNRECOGNIZED_PDU)
        if self.state is State.AWAITING_RQ and pdu_type not in (A_ASSOCIATE_RQ_TYPE, A_ABORT_TYPE):
            raise PDUError(
                f"PDU type 0x{pdu_type:02X} before A-ASSOCIATE-RQ", REASON_UNEXPECTED_PDU
            )
        if length > limit:
            raise PDUError(
                f"PDU type 0x{pdu_type:02X} of {length} bytes (at most {limit})",
                REASON_INVALID_PDU_PARAMETER,
            )

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self._reader.clear()  # nothing a peer sent outlives its connection
        self._assembler.clear()
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

    def _start_artim(self, seconds: float | None = None) -> None:
        """ARTIM (PS3.8 §9.1.5): bounds waiting for an A-ASSOCIATE-RQ (``associate_rq``, short:
        a silent connection holds a pending slot), and for the peer to close the transport
        once the association is over (``acse``)."""
        if self._artim is not None:
            self._artim.cancel()
        self._artim = self._loop.call_later(seconds or self.timeouts.acse, self._on_artim)

    @property
    def _rq_deadline(self) -> float:
        """Seconds a new connection has to send its A-ASSOCIATE-RQ: ARTIM, or shorter."""
        return min(self.timeouts.acse, self.timeouts.associate_rq)

    def _on_artim(self) -> None:
        if self.state is State.AWAITING_RQ:
            log.warning("%s: no A-ASSOCIATE-RQ within %g s: closing", self, self._rq_deadline)
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
            self._queue(message)
            return
        waiter = self._pending.get(int(message.command.get(MESSAGE_ID_BEING_RESPONDED_TO, -1)))
        if waiter is None:
            log.warning("%s: unexpected response 0x%04X ignored", self, message.command_field)
        else:
            _resolve(waiter, message)

    def _queue(self, message: Message) -> None:
        """Hand a request to the service thread; stop reading while too many wait."""
        if message.oversized:
            log.warning(
                "%s: request 0x%04X carries a data set over %d bytes: discarded, refused",
                self,
                message.command_field,
                self._max_data_set,
            )
        self._queued += 1
        if self._queued >= MAX_QUEUED_REQUESTS and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()
        self._inbox.put(message)

    def _dequeued(self) -> None:
        """A request was answered (on the loop): read again if we had stopped."""
        self._queued -= 1
        if self._paused and self._queued < MAX_QUEUED_REQUESTS and self.state is not State.CLOSED:
            self._paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
            self._watch_idle()

    def _on_abort(self, pdu: A_ABORT) -> None:
        log.info("%s: aborted by the peer (source %d, reason %d)", self, pdu.source, pdu.reason)
        _resolve(self.associated, pdu)
        self._close_transport()

    # -- association establishment -------------------------------------------------------------

    def _on_associate_rq(self, rq: A_ASSOCIATE_RQ) -> None:
        assert self._negotiator is not None
        if self._artim is not None:
            self._artim.cancel()
        self.peer_max_pdu = rq.user_information.maximum_length
        if max_pdu_too_small(self.peer_max_pdu):
            log.warning(
                "%s: refused: the peer's maximum PDU length %d cannot carry a fragment",
                self,
                self.peer_max_pdu,
            )
            self._write(A_ASSOCIATE_RJ(1, 1, 1).encode())  # permanent, service user, no reason
            self._close_transport()
            return
        self.state = State.AWAITING_LOCAL_RESPONSE
        if self._registry is not None:
            self._registry.activate(self)
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
            if max_pdu_too_small(self.peer_max_pdu):
                self.abort(ABORT_SERVICE_PROVIDER, REASON_INVALID_PDU_PARAMETER)
                _resolve(self.associated, answer)  # the caller explains it
                return
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
        """The service thread: whatever fails in one request is answered or aborts the
        association, never ends the thread; ``user.closed()`` runs however it ends."""
        try:
            while (item := self._inbox.get()) is not _CLOSED:
                if item is _RELEASE:
                    self._soon(self._answer_release())
                    continue
                assert isinstance(item, Message)
                try:
                    self._answer(user, item)
                except Exception:
                    log.exception("%s: answering 0x%04X failed: aborting", self, item.command_field)
                    self._loop.call_soon_threadsafe(self.abort, ABORT_SERVICE_PROVIDER)
                finally:
                    self._loop.call_soon_threadsafe(self._dequeued)
        finally:
            try:
                user.closed()
            except Exception:
                log.exception("%s: the service failed when told the association ended", self)
            finally:
                self._loop.call_soon_threadsafe(self._finish)

    def _decide(self, user: ServiceUser, message: Message) -> Answer:
        """The answer to a request; never raises."""
        if message.oversized:
            if message.command_field == CommandField.C_STORE_RQ:
                return Answer(OUT_OF_RESOURCES)
            return Answer(RESOURCE_LIMITATION)
        if message.command_field == CommandField.C_ECHO_RQ:
            return Answer(SUCCESS)
        try:
            return user.handle(message)
        except Exception:
            log.exception("%s: request 0x%04X could not be handled", self, message.command_field)
            return Answer(PROCESSING_FAILURE)

    def _answer(self, user: ServiceUser, message: Message) -> None:
        answer = self._decide(user, message)
        respond = self._respond(message, answer)
        if answer.after is None:
            self._soon(respond)
        elif asyncio.run_coroutine_threadsafe(respond, self._loop).result():
            try:
                answer.after()
            except Exception:
                log.exception("%s: after answering 0x%04X", self, message.command_field)

    def _soon(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Run ``coroutine`` on the loop, after everything scheduled before it."""
        self._loop.call_soon_threadsafe(self._loop.create_task, coroutine)

    async def _respond(self, message: Message, answer: Answer) -> bool:
        """Send the response; False if the association can no longer carry it. If this one
        cannot be encoded or cut into fragments, a bare failure status goes instead."""
        if self.state not in _CAN_ANSWER:
            return False  # PS3.8 allows no P-DATA in Sta7 or later; the peer stopped listening
        try:
            command = response_to(
                message.command, answer.status, with_data_set=bool(answer.data_set)
            )
            await self._send(
                message.context_id, command, (answer.data_set,) if answer.data_set else ()
            )
        except ConnectionError:
            return False
        except Exception:
            log.exception("%s: cannot send the response to 0x%04X", self, message.command_field)
            return await self._respond_failure(message)
        return True

    async def _respond_failure(self, message: Message) -> bool:
        """The last resort: a failure status alone, else abort the association."""
        try:
            await self._send(
                message.context_id, response_to(message.command, PROCESSING_FAILURE), ()
            )
        except Exception:
            log.warning("%s: cannot even answer with a failure: aborting", self)
            self.abort(ABORT_SERVICE_PROVIDER)
            return False
        return False

    # -- sending -------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _send(self, context_id: int, command: CommandSet, data_set: Iterable[bytes]) -> None:
        """Write one message, never interleaved with another (PS3.7 §9.3.1 / PS3.8 E.2)."""
        async with self._send_lock:
            written = False
            try:
                pending: list[bytes | memoryview] = []
                size = 0
                encoded = encode_command_set(command)
                for piece in fragments(context_id, encoded, data_set, self.peer_max_pdu):
                    pending.append(piece)
                    size += len(piece)
                    if size >= FLUSH_BYTES:
                        self._write_all(pending)
                        written = True
                        pending, size = [], 0
                        await self._writable.wait()
                self._write_all(pending)
            except ConnectionError:
                raise
            except Exception:
                if not written:
                    raise  # nothing of it on the wire: another message may still go
                log.exception("%s: a message was cut off: aborting", self)
                self.abort(ABORT_SERVICE_PROVIDER)
                raise ConnectionError("the message was cut off") from None

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


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


class TlsGate(asyncio.Protocol):
    """A server connection before its TLS handshake: we run the handshake ourselves
    (``loop.start_tls``) so that a failed one is logged with the peer's address and the reason
    (asyncio's server-side TLS drops them silently), then hand the connection to the
    association. It holds a pending slot meanwhile, like a connection that has not associated."""

    def __init__(
        self,
        association: Callable[[], UpperLayer],
        context: ssl.SSLContext,
        timeout: float,
        registry: Registry,
    ) -> None:
        self._association = association
        self._context = context
        self._timeout = timeout
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self.address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the handshake's bytes are for the TLS protocol, not us
        self._transport = transport
        peername = transport.get_extra_info("peername") or ("", 0)
        self.address = (str(peername[0]), int(peername[1]))
        self._registry.add_pending(self)
        asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        upper = self._association()
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                transport,
                upper,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._timeout,
            )
        except Exception as exc:
            host, port = self.address
            log.warning("TLS handshake with %s:%d failed: %s", host, port, tls_reason(exc))
            transport.close()
            return
        finally:
            self._registry.discard(self)
        if secure is None or secure.is_closing():
            return
        upper.connection_made(secure)

    def drop(self, why: str) -> None:
        host, port = self.address
        log.warning("connection from %s:%d: TLS handshake not finished, %s", host, port, why)
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)  # lost before the handshake took the transport over
