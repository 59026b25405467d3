"""The seam's classes on our own upper layer: the same :class:`Server`, :func:`open_association`,
:class:`Association` and :class:`Link` as ``stgcmt.ul``'s pynetdicom engine, so services do
not change.

The services are synchronous and threaded; the engine is one asyncio loop in a daemon thread.
Blocking calls here submit coroutines to that loop and wait; handlers run in each association's
own thread (see :mod:`.association`), never on the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import UID

from stgcmt.config import RemoteAE, Timeouts, TlsConfig
from stgcmt.dicom import codec
from stgcmt.dicom.commitment import ACTION_TYPE_REQUEST_COMMITMENT
from stgcmt.dicom.datasets import encode_data_set, read_part10_header
from stgcmt.dicom.uids import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.ul.acse import (
    PresentationContext,
    answer_contexts,
    answer_roles,
    propose,
    user_information,
)
from stgcmt.ul.association import (
    DEFAULT_MAX_PDU,
    Answer,
    Registry,
    TlsGate,
    UpperLayer,
    advertised_max_pdu,
    max_pdu_too_small,
    tls_reason,
)
from stgcmt.ul.dimse import (
    ACTION_TYPE_ID,
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    DATA_SET_PRESENT,
    DEFAULT_MAX_DATA_SET_BYTES,
    EVENT_TYPE_ID,
    NO_DATA_SET,
    PRIORITY,
    REQUESTED_SOP_CLASS_UID,
    REQUESTED_SOP_INSTANCE_UID,
    STATUS,
    CommandField,
    CommandSet,
    Message,
)
from stgcmt.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    APPLICATION_CONTEXT_NAME,
    RoleSelectionItem,
)
from stgcmt.ul.seam import (
    NON_STORAGE_SYNTAXES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    ActionRequest,
    AssociationBase,
    AssociationError,
    ContextPlan,
    EventReport,
    Handlers,
    Information,
    PeerInfo,
    Rejection,
    ServerBase,
    StoreRequest,
    aborted_request,
    cannot_connect,
    client_ssl_context,
    next_association_id,
    no_accepted_context,
    no_answer,
    rejected,
    requested_contexts,
    server_ssl_context,
)

log = logging.getLogger("stgcmt.engine")

READ_CHUNK = 1 << 20
"""C-STORE reads a file's data set in pieces of this size (the first one in the caller's
thread, so a small file costs one hop to the loop)."""
UNRECOGNIZED_OPERATION = 0x0211

T = TypeVar("T")

# -- the engine loop -----------------------------------------------------------------------------

_loop_lock = threading.Lock()
_loops: list[asyncio.AbstractEventLoop] = []


def engine_loop() -> asyncio.AbstractEventLoop:
    """The process's engine loop, started on first use in a daemon thread."""
    with _loop_lock:
        if not _loops:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="stgcmt-engine", daemon=True)
            thread.start()
            _loops.append(loop)
        return _loops[0]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the engine loop and wait for its result (from any other thread)."""
    loop = engine_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise RuntimeError("a blocking engine call was made on the engine loop")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


# -- the services' side of an association ---------------------------------------------------------


def _encode(information: Information, transfer_syntax: str) -> bytes:
    """Commitment datasets by hand when the syntax allows (fast even for 100,000 references),
    anything else with pydicom."""
    syntax = UID(transfer_syntax)
    if isinstance(information, Dataset):
        return encode_data_set(information, transfer_syntax)
    if syntax.is_little_endian and not syntax.is_deflated:
        return codec.encode(information, syntax.is_implicit_VR)
    return encode_data_set(codec.as_dataset(information), transfer_syntax)


class Link:
    """An established association, seen from a service (see ``stgcmt.ul.Link``)."""

    def __init__(self, association: UpperLayer, peer: PeerInfo) -> None:
        self._association = association
        self.peer = peer
        self._send_lock = threading.Lock()  # one request in flight per association

    @property
    def is_open(self) -> bool:
        return self._association.is_established

    def n_event_report(self, event_type_id: int, information: Information) -> int | None:
        """Send an N-EVENT-REPORT for the Storage Commitment instance; the peer's status, or
        None if none came (timeout, abort)."""
        command: CommandSet = {
            AFFECTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH_MODEL,
            COMMAND_FIELD: CommandField.N_EVENT_REPORT_RQ,
            COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            AFFECTED_SOP_INSTANCE_UID: STORAGE_COMMITMENT_INSTANCE,
            EVENT_TYPE_ID: event_type_id,
        }
        return self.request(STORAGE_COMMITMENT_PUSH_MODEL, command, information)

    def context(
        self, abstract_syntax: str, transfer_syntax: str = ""
    ) -> PresentationContext | None:
        """An accepted context for ``abstract_syntax`` (and exactly ``transfer_syntax``)."""
        return next(
            (
                cx
                for cx in self._association.contexts.values()
                if cx.abstract_syntax == abstract_syntax
                and transfer_syntax in ("", cx.transfer_syntax)
            ),
            None,
        )

    def request(
        self, abstract_syntax: str, command: CommandSet, information: Information | None = None
    ) -> int | None:
        """Send a request with its data set (if any) encoded for the context; the response
        status."""
        context = self.context(abstract_syntax)
        if context is None:
            log.warning("%s: no accepted presentation context for %s", self.peer, abstract_syntax)
            return None
        if information is None:
            return self.exchange(context, command, ())
        return self.exchange(context, command, (_encode(information, context.transfer_syntax),))

    def exchange(
        self, context: PresentationContext, command: CommandSet, data_set: Iterable[bytes]
    ) -> int | None:
        with self._send_lock:
            response = run(self._association.request(context.context_id, command, data_set))
        if response is None or STATUS not in response.command:
            return None
        return int(response.command[STATUS])


class _Services:
    """Turns the requests received on one association into calls on :class:`Handlers`."""

    def __init__(self, handlers: Handlers, association: UpperLayer, link: Link) -> None:
        self.handlers = handlers
        self.association = association
        self.link = link
        offered: dict[int, tuple[object, Callable[[Message], Answer]]] = {
            CommandField.C_STORE_RQ: (handlers.c_store, self._c_store),
            CommandField.N_ACTION_RQ: (handlers.n_action, self._n_action),
            CommandField.N_EVENT_REPORT_RQ: (handlers.n_event_report, self._n_event_report),
        }
        self._by_field = {field: call for field, (h, call) in offered.items() if h is not None}

    def handle(self, message: Message) -> Answer:
        call = self._by_field.get(message.command_field)
        return call(message) if call is not None else Answer(UNRECOGNIZED_OPERATION)

    def closed(self) -> None:
        if self.handlers.closed is not None:
            self.handlers.closed(self.link)

    def _transfer_syntax(self, message: Message) -> str:
        return self.association.contexts[message.context_id].transfer_syntax

    def _c_store(self, message: Message) -> Answer:
        assert self.handlers.c_store is not None
        command = message.command
        request = StoreRequest(
            peer=self.link.peer,
            sop_class_uid=str(command.get(AFFECTED_SOP_CLASS_UID, "")),
            sop_instance_uid=str(command.get(AFFECTED_SOP_INSTANCE_UID, "")),
            transfer_syntax=self._transfer_syntax(message),
            dataset=message.data_set or b"",
            abstract_syntax=self.association.contexts[message.context_id].abstract_syntax,
        )
        return Answer(self.handlers.c_store(request))

    def _information(self, message: Message) -> tuple[bytes | None, bool, bool]:
        """The data set as received, and its encoding: the service decodes it."""
        syntax = UID(self._transfer_syntax(message))
        return message.data_set or None, syntax.is_implicit_VR, syntax.is_little_endian

    def _n_action(self, message: Message) -> Answer:
        assert self.handlers.n_action is not None
        command = message.command
        action_type = command.get(ACTION_TYPE_ID)
        request = ActionRequest(
            self.link.peer,
            str(command.get(REQUESTED_SOP_CLASS_UID, "")),
            str(command.get(REQUESTED_SOP_INSTANCE_UID, "")),
            action_type if isinstance(action_type, int) else None,
            *self._information(message),
        )
        status, reply = self.handlers.n_action(self.link, request)
        data = None if reply is None else encode_data_set(reply, self._transfer_syntax(message))
        return Answer(status, data, self._then(self.handlers.n_action_answered))

    def _n_event_report(self, message: Message) -> Answer:
        assert self.handlers.n_event_report is not None
        event_type = message.command.get(EVENT_TYPE_ID)
        report = EventReport(
            self.link.peer,
            event_type if isinstance(event_type, int) else None,
            *self._information(message),
        )
        status = self.handlers.n_event_report(self.link, report)
        return Answer(status, None, self._then(self.handlers.n_event_report_answered))

    def _then(self, answered: Callable[[Link], None] | None) -> Callable[[], None] | None:
        return None if answered is None else partial(answered, self.link)


# -- listening -----------------------------------------------------------------------------------

_REJECTION_CODES = {  # (source, reason/diag), PS3.8 Table 9-21
    "calling-aet": (1, 3),
    "called-aet": (1, 7),
    "no-reason": (1, 1),
    "congestion": (3, 2),  # service provider (presentation): local limit exceeded
}


def _associate_rj(rejection: Rejection) -> A_ASSOCIATE_RJ:
    source, reason = _REJECTION_CODES[rejection.reason]
    transient = rejection.transient or rejection.reason == "congestion"
    return A_ASSOCIATE_RJ(2 if transient else 1, source, reason)


def _supported_syntaxes(storage: bool, commitment: bool) -> dict[str, tuple[str, ...]]:
    supported = {VERIFICATION: NON_STORAGE_SYNTAXES}
    if commitment:
        supported[STORAGE_COMMITMENT_PUSH_MODEL] = NON_STORAGE_SYNTAXES
    if storage:
        supported.update(dict.fromkeys(STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES))
    return supported


STOP_GRACE = 2.0
"""Seconds a stopping server waits for open associations to end before aborting them."""


class Server(ServerBase):
    """A listening AE (see ``stgcmt.ul.Server``)."""

    def __init__(
        self,
        aet: str,
        bind: str,
        port: int,
        handlers: Handlers,
        *,
        storage: bool = False,
        commitment: bool = True,
        timeouts: Timeouts | None = None,
        max_pdu: int = DEFAULT_MAX_PDU,
        max_associations: int = 64,
        tls: TlsConfig | None = None,
        max_pending_associations: int = 64,
        max_dataset_bytes: int = DEFAULT_MAX_DATA_SET_BYTES,
    ) -> None:
        """``max_associations`` counts associations whose A-ASSOCIATE-RQ has arrived;
        ``max_pending_associations`` connections may wait to send theirs (the oldest is
        dropped past it); ``max_pdu`` 0 advertises the default, never "unlimited"."""
        self.aet = aet
        self._address = (bind, port)
        self._handlers = handlers
        self._timeouts = timeouts or Timeouts()
        self._max_pdu = advertised_max_pdu(max_pdu)
        self._max_associations = max_associations
        self._max_dataset_bytes = max_dataset_bytes
        self._ssl_context = server_ssl_context(tls) if tls and tls.enabled else None
        self._supported = _supported_syntaxes(storage, commitment)
        self._role_classes = (STORAGE_COMMITMENT_PUSH_MODEL,) if commitment else ()
        self._registry = Registry(max_pending_associations)
        self._server: asyncio.Server | None = None

    def start(self) -> Server:
        self._server = run(self._listen())
        return self

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        factory = self._new_association if self._ssl_context is None else self._new_tls
        return await loop.create_server(factory, *self._address, reuse_address=True)

    def _new_association(self) -> UpperLayer:
        return UpperLayer(
            self._timeouts,
            negotiator=self._negotiate,
            registry=self._registry,
            max_pdu=self._max_pdu,
            max_data_set=self._max_dataset_bytes,
        )

    def _new_tls(self) -> TlsGate:
        assert self._ssl_context is not None
        return TlsGate(
            self._new_association,
            self._ssl_context,
            self._timeouts.associate_rq,
            self._registry,
        )

    @property
    def _associations(self) -> set[UpperLayer]:
        """Associations whose A-ASSOCIATE-RQ has arrived, until they are over."""
        return self._registry.active

    async def _negotiate(
        self, association: UpperLayer, rq: A_ASSOCIATE_RQ
    ) -> A_ASSOCIATE_AC | A_ASSOCIATE_RJ:
        if rq.application_context_name != APPLICATION_CONTEXT_NAME:
            return A_ASSOCIATE_RJ(1, 1, 2)
        if not rq.protocol_version & 1:
            return A_ASSOCIATE_RJ(1, 2, 2)
        if len(self._associations) > self._max_associations:
            return _associate_rj(Rejection("congestion"))
        host, port = association.address
        peer = PeerInfo(rq.calling_ae_title, rq.called_ae_title, host, port, next_association_id())
        if self._handlers.accept is not None:
            rejection = await asyncio.to_thread(self._handlers.accept, peer)
            if rejection is not None:
                return _associate_rj(rejection)
        association.user = _Services(self._handlers, association, Link(association, peer))
        roles = answer_roles(rq.user_information.role_selection, self._role_classes)
        return A_ASSOCIATE_AC(
            rq.called_ae_title,
            rq.calling_ae_title,
            answer_contexts(rq.presentation_contexts, self._supported),
            user_information(self._max_pdu, roles),
        )

    @property
    def active_associations(self) -> int:
        """Associations being served now (the one being negotiated included); connections
        that have not sent an A-ASSOCIATE-RQ do not count."""
        return len(self._associations)

    @property
    def pending_connections(self) -> int:
        """Connections that have not sent an A-ASSOCIATE-RQ yet (or not finished TLS)."""
        return len(self._registry.pending)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop listening, give open associations ``grace`` seconds to end by themselves (a
        response being sent is not cut off), then abort the rest (the services' journals
        resume what they were doing)."""
        if self._server is not None:
            run(self._close(self._server, grace))
            self._server = None

    async def _close(self, server: asyncio.Server, grace: float) -> None:
        server.close()
        for connection in list(self._registry.pending):
            connection.drop("the server is stopping")
        finishing = [a.finished for a in self._associations]
        if not finishing:
            return
        await asyncio.wait(finishing, timeout=grace)
        for association in list(self._associations):
            association.abort()
        await asyncio.wait(finishing, timeout=self._timeouts.acse)


# -- requesting ----------------------------------------------------------------------------------


class Association(AssociationBase):
    """An association we opened (see ``stgcmt.ul.Association``); releases on exit."""

    def __init__(self, association: UpperLayer, link: Link) -> None:
        self._association = association
        self.link = link

    @property
    def accepts_commitment(self) -> bool:
        return self.link.context(STORAGE_COMMITMENT_PUSH_MODEL) is not None

    def accepts(self, sop_class_uid: str, transfer_syntax: str) -> bool:
        return self.link.context(sop_class_uid, transfer_syntax) is not None

    def c_echo(self) -> int | None:
        command: CommandSet = {
            AFFECTED_SOP_CLASS_UID: VERIFICATION,
            COMMAND_FIELD: CommandField.C_ECHO_RQ,
            COMMAND_DATA_SET_TYPE: NO_DATA_SET,
        }
        return self.link.request(VERIFICATION, command)

    def c_store(self, path: Path) -> int | None:
        """Send one Part 10 file's data set as it is on disk. None means no response (outcome
        unknown) or a file that cannot be sent on this association; OSError if unreadable."""
        with open(path, "rb") as f:
            try:
                header = read_part10_header(f)
            except (ValueError, OSError) as exc:
                log.warning("C-STORE of %s: cannot be sent: %s", path, exc)
                return None
            context = self.link.context(header.sop_class_uid, header.transfer_syntax)
            if context is None:
                log.warning(
                    "C-STORE of %s: no accepted presentation context for %s in %s",
                    path,
                    header.sop_class_uid,
                    header.transfer_syntax,
                )
                return None
            first = f.read(READ_CHUNK)
            if not first:
                log.warning("C-STORE of %s: the file holds no data set", path)
                return None
            command: CommandSet = {
                AFFECTED_SOP_CLASS_UID: header.sop_class_uid,
                COMMAND_FIELD: CommandField.C_STORE_RQ,
                PRIORITY: 0,
                COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
                AFFECTED_SOP_INSTANCE_UID: header.sop_instance_uid,
            }
            rest = iter(partial(f.read, READ_CHUNK), b"")
            return self.link.exchange(context, command, itertools.chain((first,), rest))

    def n_action(self, information: Information) -> int | None:
        command: CommandSet = {
            REQUESTED_SOP_CLASS_UID: STORAGE_COMMITMENT_PUSH_MODEL,
            COMMAND_FIELD: CommandField.N_ACTION_RQ,
            COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            REQUESTED_SOP_INSTANCE_UID: STORAGE_COMMITMENT_INSTANCE,
            ACTION_TYPE_ID: ACTION_TYPE_REQUEST_COMMITMENT,
        }
        return self.link.request(STORAGE_COMMITMENT_PUSH_MODEL, command, information)

    def release(self) -> None:
        run(self._association.release())

    def abort(self) -> None:
        run(_abort(self._association))


async def _abort(association: UpperLayer) -> None:
    association.abort()


def open_association(
    local_aet: str,
    remote: RemoteAE,
    plan: ContextPlan,
    *,
    handlers: Handlers | None = None,
    timeouts: Timeouts | None = None,
    max_pdu: int = DEFAULT_MAX_PDU,
    tls: TlsConfig | None = None,
) -> Association:
    """Request an association, raising :class:`AssociationError` with a sentence a user can act
    on if the peer is unreachable or rejects it."""
    roles = [RoleSelectionItem(STORAGE_COMMITMENT_PUSH_MODEL, False, True)]
    rq = A_ASSOCIATE_RQ(
        remote.aet,
        local_aet,
        propose(requested_contexts(plan)),
        user_information(advertised_max_pdu(max_pdu), roles if plan.commitment == "scp" else ()),
    )
    peer = PeerInfo(remote.aet, local_aet, remote.host, remote.port, next_association_id())
    ssl_context = client_ssl_context(tls) if tls and tls.enabled else None
    upper = run(
        _associate(remote, rq, handlers or Handlers(), peer, timeouts or Timeouts(), ssl_context)
    )
    association = Association(upper, upper.user.link)  # type: ignore[union-attr]
    return association.checked(plan, remote)


async def _associate(
    remote: RemoteAE,
    rq: A_ASSOCIATE_RQ,
    handlers: Handlers,
    peer: PeerInfo,
    timeouts: Timeouts,
    ssl_context: ssl.SSLContext | None,
) -> UpperLayer:
    def new_association() -> UpperLayer:
        upper = UpperLayer(timeouts, request=rq)
        upper.user = _Services(handlers, upper, Link(upper, peer))
        return upper

    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeouts.connect):
            _, upper = await loop.create_connection(
                new_association,
                remote.host,
                remote.port,
                ssl=ssl_context,
                server_hostname=remote.host if ssl_context else None,
            )
    except ssl.SSLError as exc:  # an OSError too, but not a connection refused
        log.info("TLS handshake with %s failed: %s", remote, exc)
        raise AssociationError(tls_failed(remote, exc)) from None
    except (OSError, TimeoutError) as exc:
        log.info("cannot connect to %s: %s", remote, exc)
        raise AssociationError(cannot_connect(remote)) from None
    try:
        async with asyncio.timeout(timeouts.acse):
            answer = await upper.associated
    except TimeoutError:
        upper.abort()
        raise AssociationError(no_answer(remote)) from None
    _check_answer(remote, rq, upper, answer)
    return upper


def _check_answer(
    remote: RemoteAE,
    rq: A_ASSOCIATE_RQ,
    upper: UpperLayer,
    answer: A_ASSOCIATE_AC | A_ASSOCIATE_RJ | A_ABORT | None,
) -> None:
    if isinstance(answer, A_ASSOCIATE_AC) and max_pdu_too_small(upper.peer_max_pdu):
        raise AssociationError(peer_max_pdu_too_small(remote, upper.peer_max_pdu))
    if isinstance(answer, A_ASSOCIATE_RJ):
        raise AssociationError(rejected(remote, answer.result, answer.source, answer.reason))
    if not isinstance(answer, A_ASSOCIATE_AC):
        raise AssociationError(aborted_request(remote))
    if not upper.contexts:
        upper.abort()
        proposed = (cx.abstract_syntax for cx in rq.presentation_contexts)
        raise AssociationError(no_accepted_context(remote, proposed))


def tls_failed(remote: object, exc: BaseException) -> str:
    """A failed TLS handshake, with its reason (e.g. the certificate that did not verify)."""
    return f"TLS handshake with {remote} failed: {tls_reason(exc)}"


def peer_max_pdu_too_small(remote: object, max_pdu: int) -> str:
    return (
        f"{remote} accepted with a maximum PDU length of {max_pdu} bytes, too small to carry "
        "any DIMSE message: association aborted (fix the peer's maximum PDU setting)"
    )
