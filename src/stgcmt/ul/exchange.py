"""DIMSE message exchange over an established association (PS3.7 §9.3, PS3.8 Annex E): the
half of :class:`.association.UpperLayer` that receives messages, hands requests to the service
thread, sends responses and requests.

Everything here runs on the engine's event loop, except most service code: each association
has a thread that hands its received requests to the :class:`ServiceUser` one at a time (so
responses leave in the order requests came; handlers may block on SQLite or fsync) while the
loop keeps reading. A dedicated thread costs a third of a thread-pool round trip per message.

Two things skip the thread. A C-STORE complete within its first
:data:`~.dimse.STREAM_PREFIX_BYTES` is handled and answered on the loop when nothing is waiting
in the thread (the hop cost ~175 µs of wake-up and GIL hand-over per instance, more than the
store itself). And a longer data set the user agrees to stream goes to the thread piece by
piece as it arrives (:class:`~.seam.StoreSink`), never held whole: reading stops while more
than :data:`STREAM_BUFFER_BYTES` wait there.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from stgcmt.config import Timeouts
from stgcmt.ul.acse import PresentationContext
from stgcmt.ul.dimse import (
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    STREAM_PREFIX_BYTES,
    CommandField,
    CommandSet,
    Fragment,
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
from stgcmt.ul.seam import StoreSink
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
STREAM_BUFFER_BYTES = 4 << 20
"""Bytes of a streamed data set received but not yet written by the thread before we stop
reading (the disk is slower than the network): the memory an association holds."""
STREAM_REPORT_BYTES = 1 << 20
"""The thread tells the loop what it has written every this many bytes (not every PDU)."""
_C_STORE_RQ = int(CommandField.C_STORE_RQ)


@dataclass
class Answer:
    """A service's answer to a request: the status, an encoded data set to return, and what to
    do once the response has been handed to the transport."""

    status: int
    data_set: bytes | None = None
    after: Callable[[], None] | None = None


class ServiceUser(Protocol):
    """What the association asks of the services above it (in its thread, except
    :meth:`streams` and the :meth:`handle` of a small C-STORE: on the loop)."""

    def handle(self, message: Message) -> Answer: ...

    def streams(self, message: Message, first: bytes) -> bool:
        """Whether this request's data set, beginning with ``first``, goes to :meth:`begin`
        as it arrives (else it is held whole)."""

    def begin(self, message: Message) -> StoreSink | Answer:
        """A streamed request (its ``data_set`` the first bytes): where the rest goes, or the
        answer to give once it has arrived (the rest dropped)."""

    def closed(self) -> None: ...


@dataclass
class _Stream:
    """A streamed request in the service thread: its sink (None once refused or failed, the
    rest then dropped) and the answer decided so far."""

    message: Message
    sink: StoreSink | None
    answer: Answer | None = None
    unreported: int = 0


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
    user: ServiceUser | None
    timeouts: Timeouts
    contexts: dict[int, PresentationContext]
    peer_max_pdu: int
    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport | None
    _assembler: MessageAssembler
    _max_data_set: int
    _queued: int
    _streaming: int
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
            received = self._assembler.feed(pdv)
            if isinstance(received, Fragment):
                self._streaming += len(received.data)
                self._inbox.put(received)
                self._update_reading()
            elif received is not None:
                self._on_message(received)

    def _streams(self, message: Message, first: bytes) -> bool:
        """The assembler's question: stream this request's data set?"""
        user = self.user
        return (
            user is not None and not is_response(message.command) and user.streams(message, first)
        )

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
        """Answer a small C-STORE here and now if nothing is ahead of it; else hand the request
        to the service thread, and stop reading while too many wait."""
        if message.oversized:
            log.warning(
                "%s: request 0x%04X carries a data set over %d bytes: discarded, refused",
                self,
                message.command_field,
                self._max_data_set,
            )
        elif self._answers_now(message):
            assert self.user is not None
            self._respond_now(message, self._decide(self.user, message))
            return
        self._queued += 1
        self._inbox.put(message)
        self._update_reading()

    def _answers_now(self, message: Message) -> bool:
        """A small whole C-STORE (a long one held whole would stall every association on the
        loop while written) with nothing queued before it, nothing being sent and a transport
        that takes writes: its answer cannot overtake another one."""
        return (
            message.command_field == _C_STORE_RQ
            and not message.streamed
            and len(message.data_set or b"") <= STREAM_PREFIX_BYTES
            and self._queued == 0
            and self.user is not None
            and not self._send_lock.locked()
            and self._writable.is_set()
        )

    def _dequeued(self) -> None:
        """A request was answered (on the loop): read again if we had stopped."""
        self._queued -= 1
        self._update_reading()

    def _written(self, size: int) -> None:
        """The thread wrote ``size`` bytes of a streamed data set (on the loop)."""
        self._streaming -= size
        self._update_reading()

    def _update_reading(self) -> None:
        """Stop reading while too many requests or too many streamed bytes wait for the
        thread; read again once they do not."""
        transport = self._transport
        if transport is None or transport.is_closing() or self.state is State.CLOSED:
            return
        blocked = self._queued >= MAX_QUEUED_REQUESTS or self._streaming > STREAM_BUFFER_BYTES
        if blocked and not self._paused:
            self._paused = True
            transport.pause_reading()
        elif not blocked and self._paused:
            self._paused = False
            transport.resume_reading()
            self._watch_idle()

    # -- answering requests (in the association's thread) ---------------------------------------

    def _serve(self, user: ServiceUser) -> None:
        """The service thread: whatever fails in one request is answered or aborts the
        association, never ends the thread; ``user.closed()`` runs however it ends."""
        stream: _Stream | None = None
        try:
            while (item := self._inbox.get()) is not CLOSED:
                if isinstance(item, Fragment):
                    stream = self._stream_on(stream, item) if stream else self._orphan(item)
                    continue
                self._drop(stream)  # a release before a streamed data set ended
                stream = None
                if item is RELEASE:
                    self._soon(self._answer_release())
                    continue
                assert isinstance(item, Message)
                if item.streamed:
                    stream = self._stream_start(user, item)
                else:
                    self._serve_one(item, partial(self._decide, user, item))
        finally:
            self._drop(stream)
            try:
                user.closed()
            except Exception:
                log.exception("%s: the service failed when told the association ended", self)
            finally:
                self._loop.call_soon_threadsafe(self._finish)

    def _serve_one(self, message: Message, decide: Callable[[], Answer]) -> None:
        """Answer one request in the thread: a failure aborts the association, never ends the
        thread."""
        try:
            self._answer(message, decide())
        except Exception:
            log.exception("%s: answering 0x%04X failed: aborting", self, message.command_field)
            self._loop.call_soon_threadsafe(self.abort, ABORT_SERVICE_PROVIDER)
        finally:
            self._loop.call_soon_threadsafe(self._dequeued)

    # -- streamed data sets (in the association's thread) --------------------------------------

    def _stream_start(self, user: ServiceUser, message: Message) -> _Stream:
        try:
            begun = user.begin(message)
        except Exception:
            log.exception("%s: request 0x%04X could not be handled", self, message.command_field)
            begun = Answer(PROCESSING_FAILURE)
        if isinstance(begun, Answer):
            return _Stream(message, None, begun)
        return _Stream(message, begun)

    def _stream_on(self, stream: _Stream, fragment: Fragment) -> _Stream | None:
        """Write one fragment; after the last, answer (None: the stream is over)."""
        if stream.sink is not None:
            try:
                stream.sink.write(fragment.data)
            except Exception:
                log.exception("%s: a streamed data set could not be written", self)
                self._drop(stream)
                stream.answer = Answer(PROCESSING_FAILURE)
        stream.unreported += len(fragment.data)
        if stream.unreported >= STREAM_REPORT_BYTES or fragment.last:
            self._loop.call_soon_threadsafe(self._written, stream.unreported)
            stream.unreported = 0
        if not fragment.last:
            return stream
        self._serve_one(stream.message, partial(self._finish_stream, stream))
        return None

    def _orphan(self, fragment: Fragment) -> _Stream | None:
        """A fragment of a data set dropped before its end (a peer that released in the middle
        of a message): only counted, so that reading goes on; no stream follows."""
        self._loop.call_soon_threadsafe(self._written, len(fragment.data))
        return None

    def _finish_stream(self, stream: _Stream) -> Answer:
        if stream.sink is None:
            return stream.answer or Answer(PROCESSING_FAILURE)
        try:
            return Answer(stream.sink.finish())
        except Exception:
            log.exception("%s: a streamed data set could not be stored", self)
            self._drop(stream)
            return Answer(PROCESSING_FAILURE)

    def _drop(self, stream: _Stream | None) -> None:
        """Discard what a stream wrote (the association ended, or writing failed)."""
        if stream is None:
            return
        if stream.unreported:
            self._loop.call_soon_threadsafe(self._written, stream.unreported)
            stream.unreported = 0
        if stream.sink is None:
            return
        sink, stream.sink = stream.sink, None
        try:
            sink.discard()
        except Exception:
            log.exception("%s: a streamed data set could not be discarded", self)

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

    def _answer(self, message: Message, answer: Answer) -> None:
        respond = self._respond(message, answer)
        if answer.after is None:
            self._soon(respond)
        elif asyncio.run_coroutine_threadsafe(respond, self._loop).result():
            self._after(message, answer)

    def _after(self, message: Message, answer: Answer) -> None:
        """What the service does once its response has left (never raises)."""
        if answer.after is None:
            return
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

    def _respond_now(self, message: Message, answer: Answer) -> None:
        """:meth:`_respond` without a task, on the loop: written at once (the caller checked
        that nothing is being sent)."""
        if not allows(self.state, Event.P_DATA_REQUEST):
            return
        data = (answer.data_set,) if answer.data_set else ()
        try:
            command = response_to(message.command, answer.status, with_data_set=bool(data))
            self._write_all(list(self._pieces(message.context_id, command, data)))
        except ConnectionError:
            return
        except Exception:
            log.exception("%s: cannot send the response to 0x%04X", self, message.command_field)
            spawn(self._respond_failure(message))
            return
        self._after(message, answer)

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
                for piece in self._pieces(context_id, command, data_set):
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

    def _pieces(
        self, context_id: int, command: CommandSet, data_set: Iterable[bytes]
    ) -> Iterable[bytes | memoryview]:
        return fragments(context_id, encode_command_set(command), data_set, self.peer_max_pdu)

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
