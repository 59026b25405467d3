"""DIMSE message exchange over an established association (PS3.7 §9.3, PS3.8 Annex E): the
half of :class:`.association.UpperLayer` that receives messages, hands requests to the service
thread, sends responses and requests.

Everything here runs on the engine's event loop, except service code: each association has a
thread that hands its received requests to the :class:`ServiceUser` one at a time (so responses
leave in the order requests came; handlers may block on SQLite or fsync) while the loop keeps
reading. A dedicated thread costs a third of a thread-pool round trip per message.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from stgcmt.config import Timeouts
from stgcmt.ul.acse import PresentationContext
from stgcmt.ul.dimse import (
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
from stgcmt.ul.fsm import Event, State, allows
from stgcmt.ul.negotiation_log import log_echo_answered
from stgcmt.ul.pdu import P_DATA_TF
from stgcmt.ul.pdu_items import ABORT_SERVICE_PROVIDER, PDUError
from stgcmt.ul.tasks import spawn

log = logging.getLogger("stgcmt.engine")

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
"""C-STORE: Refused: Out of Resources (PS3.4 B.2.3)."""
RESOURCE_LIMITATION = 0x0213
"""N-ACTION, N-EVENT-REPORT: Resource limitation (PS3.7 C.5)."""
FLUSH_BYTES = 1 << 20
"""Bytes of a message written before waiting for the transport to drain."""
MAX_QUEUED_REQUESTS = 2
"""Requests received but not yet answered before we stop reading: without an Asynchronous
Operations Window a peer may have one outstanding, so this only stops a peer that ignores
that from piling data sets up in memory."""


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


RELEASE = object()
"""In the service thread's inbox: answer the peer's A-RELEASE-RQ (after earlier requests)."""
CLOSED = object()
"""In the service thread's inbox: the connection is gone."""


def resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


class MessageExchange:
    """DIMSE over the association; :class:`.association.UpperLayer` provides the state, the
    transport and the loop."""

    state: State
    timeouts: Timeouts
    contexts: dict[int, PresentationContext]
    peer_max_pdu: int
    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport | None
    _assembler: MessageAssembler
    _max_data_set: int
    _queued: int
    _paused: bool
    _inbox: queue.SimpleQueue[object]
    _pending: dict[int, asyncio.Future[Message | None]]
    _message_id: int
    _send_lock: asyncio.Lock
    _writable: asyncio.Event

    def abort(self, source: int = 0, reason: int = 0) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    async def _answer_release(self) -> None:
        raise NotImplementedError

    def _watch_idle(self) -> None:
        raise NotImplementedError

    # -- receiving (DT-2, AR-6) ----------------------------------------------------------------

    def _on_p_data(self, body: bytes) -> None:
        for pdv in P_DATA_TF.decode(body).items:
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
            resolve(waiter, message)

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

    # -- answering requests (in the association's thread) ---------------------------------------

    def _serve(self, user: ServiceUser) -> None:
        """The service thread: whatever fails in one request is answered or aborts the
        association, never ends the thread; ``user.closed()`` runs however it ends."""
        try:
            while (item := self._inbox.get()) is not CLOSED:
                if item is RELEASE:
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
            log_echo_answered(self, SUCCESS, getattr(getattr(user, "link", None), "peer", None))
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
        self._loop.call_soon_threadsafe(spawn, coroutine)

    async def _respond(self, message: Message, answer: Answer) -> bool:
        """Send the response; False if the association can no longer carry it. If this one
        cannot be encoded or cut into fragments, a bare failure status goes instead."""
        if not allows(self.state, Event.P_DATA_REQUEST):
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

    # -- sending (DT-1, AR-7) --------------------------------------------------------------------

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
            resolve(waiter, None)
