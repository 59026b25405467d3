"""The networking seam: the only module that talks DICOM upper layer and DIMSE.

Services (SCP, SCU, agent) see plain Python objects: :class:`Handlers` for what arrives,
:class:`Association` for what they send, :class:`Server` for listening; nothing engine-specific
escapes this module.

Two engines implement it: our own asyncio upper layer (``stgcmt.engine``, the default) and
pynetdicom (the classes below, kept as the reference implementation), chosen by the
environment variable ``STGCMT_ENGINE`` (``asyncio`` or ``pynetdicom``), read at import; the
module exports the same names either way.

Two pynetdicom habits are corrected here: every socket gets TCP_NODELAY (otherwise Nagle and
delayed ACK cost ~40 ms per message on loopback), and a DIMSE timeout is reported as ``None``
("outcome unknown") so the caller can re-send on a new association.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context

from . import codec
from .config import RemoteAE, Timeouts, TlsConfig
from .netapi import (
    MAX_CONTEXTS,
    NON_STORAGE_SYNTAXES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    ActionRequest,
    AssociationBase,
    AssociationError,
    CommitmentRole,
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
    is_success,
    next_association_id,
    no_accepted_context,
    no_answer,
    plan_storage_associations,
    rejected,
    requested_contexts,
    server_ssl_context,
)
from .protocol import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    SUCCESS,
    VERIFICATION,
)

__all__ = [
    "MAX_CONTEXTS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "ActionRequest",
    "Association",
    "AssociationError",
    "CommitmentRole",
    "ContextPlan",
    "EventReport",
    "Handlers",
    "Link",
    "PeerInfo",
    "Rejection",
    "Server",
    "StoreRequest",
    "is_success",
    "open_association",
    "plan_storage_associations",
]

log = logging.getLogger(__name__)

# Send C-STORE datasets straight from their files instead of decoding them into memory.
_config.STORE_SEND_CHUNKED_DATASET = True
# Our own log lines tell the story; pynetdicom's INFO output would drown them.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


class Link:
    """An established association, seen from a service: who it is with, and the one message a
    service ever sends on an association it did not open (the N-EVENT-REPORT, same-association
    delivery)."""

    def __init__(self, assoc: Any, peer: PeerInfo) -> None:
        self._assoc = assoc
        self.peer = peer
        self._send_lock = threading.Lock()  # one request in flight per association

    @property
    def is_open(self) -> bool:
        return bool(self._assoc.is_established)

    def n_event_report(self, event_type_id: int, information: Information) -> int | None:
        """Send an N-EVENT-REPORT for the Storage Commitment instance; returns the peer's status
        or None if none came (timeout, abort)."""
        with self._send_lock:
            return self._send_n_event_report(event_type_id, information)

    def _send_n_event_report(self, event_type_id: int, information: Information) -> int | None:
        if not self.is_open:
            return None
        try:
            rsp = self._assoc.send_n_event_report(
                _as_dataset(information),
                event_type_id,
                STORAGE_COMMITMENT_PUSH_MODEL,
                STORAGE_COMMITMENT_INSTANCE,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("N-EVENT-REPORT to %s could not be sent: %s", self.peer, exc)
            return None
        status, _ = rsp if isinstance(rsp, tuple) else (rsp, None)
        return _status_of(status)


def _encoded(data: Any, context: Any) -> tuple[bytes | None, bool, bool]:
    """A received data set as bytes, with its context's encoding (the service decodes)."""
    syntax = UID(context.transfer_syntax)
    raw = data.getvalue() if data is not None else None
    return raw or None, syntax.is_implicit_VR, syntax.is_little_endian


def _as_dataset(information: Information) -> Dataset:
    """pynetdicom encodes Datasets itself."""
    return information if isinstance(information, Dataset) else codec.as_dataset(information)


def _status_of(rsp: Dataset | None) -> int | None:
    if rsp is None or "Status" not in rsp:
        return None
    return int(rsp.Status)


def _on_connection_open(event: Any) -> None:
    event.assoc._stgcmt_connected = True
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _configure_ae(ae: AE, timeouts: Timeouts, max_pdu: int) -> None:
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    ae.connection_timeout = timeouts.connect
    ae.maximum_pdu_size = max_pdu


def _peer_from_assoc(assoc: Any, *, acceptor: bool) -> PeerInfo:
    """Peer identity; cached on the association so every handler sees the same id."""
    cached = getattr(assoc, "_stgcmt_peer", None)
    if cached is not None:
        return cached
    if acceptor:
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        host, port = assoc.requestor.address, assoc.requestor.port
    else:
        calling = assoc.acceptor.ae_title.strip()
        called = assoc.requestor.ae_title.strip()
        host, port = assoc.acceptor.address, assoc.acceptor.port
    peer = PeerInfo(calling, called, str(host), int(port or 0), next_association_id())
    assoc._stgcmt_peer = peer
    return peer


_REJECT_DIAGNOSTIC = {"calling-aet": (1, 0x03), "called-aet": (1, 0x07), "no-reason": (1, 0x01)}


class _Bridge:
    """Translates pynetdicom events into calls on :class:`Handlers`."""

    def __init__(self, handlers: Handlers, *, acceptor: bool) -> None:
        self.handlers = handlers
        self.acceptor = acceptor

    def link(self, event: Any) -> Link:
        link = getattr(event.assoc, "_stgcmt_link", None)
        if link is None:
            link = Link(event.assoc, _peer_from_assoc(event.assoc, acceptor=self.acceptor))
            event.assoc._stgcmt_link = link
        return link

    def evt_handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        h = self.handlers
        pairs: list[tuple[Any, Callable[..., Any]]] = [
            (evt.EVT_CONN_OPEN, _on_connection_open),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
        ]
        if self.acceptor:
            pairs.append((evt.EVT_REQUESTED, self.on_requested))
        if h.c_store:
            pairs.append((evt.EVT_C_STORE, self.on_c_store))
        if h.n_action:
            pairs.append((evt.EVT_N_ACTION, self.on_n_action))
            pairs.append((evt.EVT_DIMSE_SENT, self.on_dimse_sent))
        if h.n_event_report:
            pairs.append((evt.EVT_N_EVENT_REPORT, self.on_n_event_report))
        if h.n_event_report_answered:
            pairs.append((evt.EVT_PDU_SENT, self.on_pdu_sent))
        if h.closed:
            for event_type in (evt.EVT_RELEASED, evt.EVT_ABORTED, evt.EVT_CONN_CLOSE):
                pairs.append((event_type, self.on_closed))
        return pairs

    def on_requested(self, event: Any) -> None:
        if self.handlers.accept is None:
            return
        peer = _peer_from_assoc(event.assoc, acceptor=True)
        rejection = self.handlers.accept(peer)
        if rejection is None:
            return
        if rejection.reason == "congestion":
            result, source, diagnostic = 2, 3, 0x02
        else:
            source, diagnostic = _REJECT_DIAGNOSTIC[rejection.reason]
            result = 2 if rejection.transient else 1
        event.assoc.acse.send_reject(result, source, diagnostic)
        # As pynetdicom's own rejection path does: let the DUL send the A-ASSOCIATE-RJ before
        # the acceptor thread closes the socket.
        event.assoc.kill()

    def on_c_store(self, event: Any) -> int:
        assert self.handlers.c_store is not None
        req = event.request
        request = StoreRequest(
            peer=self.link(event).peer,
            sop_class_uid=str(req.AffectedSOPClassUID),
            sop_instance_uid=str(req.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            dataset=event.encoded_dataset(include_meta=False),
        )
        return self.handlers.c_store(request)

    def on_n_action(self, event: Any) -> tuple[int, Dataset | None]:
        assert self.handlers.n_action is not None
        req = event.request
        request = ActionRequest(
            self.link(event).peer,
            str(req.RequestedSOPClassUID or ""),
            str(req.RequestedSOPInstanceUID or ""),
            req.ActionTypeID,
            *_encoded(req.ActionInformation, event.context),
        )
        return self.handlers.n_action(self.link(event), request)

    def on_dimse_sent(self, event: Any) -> None:
        if type(event.message).__name__ == "N_ACTION_RSP" and self.handlers.n_action_answered:
            self.handlers.n_action_answered(self.link(event))

    def on_n_event_report(self, event: Any) -> tuple[int, None]:
        assert self.handlers.n_event_report is not None
        report = EventReport(
            self.link(event).peer,
            event.request.EventTypeID,
            *_encoded(event.request.EventInformation, event.context),
        )
        status = self.handlers.n_event_report(self.link(event), report)
        event.assoc._stgcmt_answering = True  # the next P-DATA we send is the response
        return status, None

    def on_pdu_sent(self, event: Any) -> None:
        assert self.handlers.n_event_report_answered is not None
        answering = getattr(event.assoc, "_stgcmt_answering", False)
        if answering and type(event.pdu).__name__ == "P_DATA_TF":
            event.assoc._stgcmt_answering = False
            self.handlers.n_event_report_answered(self.link(event))

    def on_closed(self, event: Any) -> None:
        assert self.handlers.closed is not None
        link = getattr(event.assoc, "_stgcmt_link", None)
        if link is not None and not getattr(event.assoc, "_stgcmt_closed", False):
            event.assoc._stgcmt_closed = True
            self.handlers.closed(link)


class Server(ServerBase):
    """A listening AE. ``storage`` accepts every Storage SOP Class and transfer syntax;
    ``commitment`` accepts the Storage Commitment Push Model, including associations whose
    requester asks for the SCP role (reports delivered on a new association)."""

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
        max_pdu: int = 0,
        max_associations: int = 64,
        tls: TlsConfig | None = None,
    ) -> None:
        self.aet = aet
        self._address = (bind, port)
        self._ssl_context = server_ssl_context(tls) if tls and tls.enabled else None
        self._bridge = _Bridge(handlers, acceptor=True)
        self._ae = AE(ae_title=aet)
        _configure_ae(self._ae, timeouts or Timeouts(), max_pdu)
        self._ae.maximum_associations = max_associations
        self._ae.require_called_aet = False  # checked by the service's accept handler
        self._ae.add_supported_context(VERIFICATION, NON_STORAGE_SYNTAXES)
        if commitment:
            self._ae.add_supported_context(
                STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES, scu_role=True, scp_role=True
            )
        if storage:
            for uid in sorted(STORAGE_SOP_CLASSES):
                self._ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        self._server: Any = None

    def start(self) -> Server:
        self._server = self._ae.start_server(
            self._address,
            block=False,
            evt_handlers=self._bridge.evt_handlers(),
            ssl_context=self._ssl_context,
        )
        return self

    @property
    def active_associations(self) -> int:
        """Associations being served now (the one being negotiated included)."""
        return len(self._server.active_associations) if self._server else 0

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class Association(AssociationBase):
    """An association we opened. Use as a context manager: it releases on exit."""

    def __init__(self, assoc: Any, peer: PeerInfo) -> None:
        self._assoc = assoc
        self.link = Link(assoc, peer)
        assoc._stgcmt_link = self.link

    @property
    def accepts_commitment(self) -> bool:
        return any(
            cx.abstract_syntax == STORAGE_COMMITMENT_PUSH_MODEL
            for cx in self._assoc.accepted_contexts
        )

    def accepts(self, sop_class_uid: str, transfer_syntax: str) -> bool:
        return any(
            cx.abstract_syntax == sop_class_uid and cx.transfer_syntax[0] == transfer_syntax
            for cx in self._assoc.accepted_contexts
        )

    def c_echo(self) -> int | None:
        return _status_of(self._assoc.send_c_echo())

    def c_store(self, path: Path) -> int | None:
        """Send one Part 10 file; None means no response arrived (outcome unknown: the
        association is aborted and the caller should re-send on a new one)."""
        try:
            return _status_of(self._assoc.send_c_store(Path(path)))
        except (RuntimeError, ValueError, AttributeError) as exc:
            log.warning("C-STORE of %s failed locally: %s", path, exc)
            return None

    def n_action(self, information: Information) -> int | None:
        rsp = self._assoc.send_n_action(
            _as_dataset(information), 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
        )
        status, _ = rsp
        return _status_of(status)

    def release(self) -> None:
        if self._assoc.is_established:
            self._assoc.release()

    def abort(self) -> None:
        self._assoc.abort()


def open_association(
    local_aet: str,
    remote: RemoteAE,
    plan: ContextPlan,
    *,
    handlers: Handlers | None = None,
    timeouts: Timeouts | None = None,
    max_pdu: int = 0,
    tls: TlsConfig | None = None,
) -> Association:
    """Request an association, raising :class:`AssociationError` with a sentence a user can act
    on if the peer is unreachable or rejects it."""
    ae = AE(ae_title=local_aet)
    _configure_ae(ae, timeouts or Timeouts(), max_pdu)
    contexts = [build_context(uid, list(ts)) for uid, ts in requested_contexts(plan)]
    ext_neg: list[Any] = []
    if plan.commitment == "scp":
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = STORAGE_COMMITMENT_PUSH_MODEL
        role.scu_role = False
        role.scp_role = True
        ext_neg.append(role)
    bridge = _Bridge(handlers or Handlers(), acceptor=False)
    assoc = ae.associate(
        remote.host,
        remote.port,
        contexts=contexts,
        ae_title=remote.aet,
        ext_neg=ext_neg or None,
        evt_handlers=bridge.evt_handlers(),
        tls_args=(client_ssl_context(tls), None) if tls and tls.enabled else None,
    )
    if not assoc.is_established:
        raise AssociationError(_refusal(assoc, remote))
    return Association(assoc, _peer_from_assoc(assoc, acceptor=False)).checked(plan, remote)


def _refusal(assoc: Any, remote: RemoteAE) -> str:
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        return rejected(remote, primitive.result, primitive.result_source, primitive.diagnostic)
    if not getattr(assoc, "_stgcmt_connected", False):
        return cannot_connect(remote)
    if assoc.is_aborted and not assoc.accepted_contexts and assoc.rejected_contexts:
        return no_accepted_context(remote, (cx.abstract_syntax for cx in assoc.rejected_contexts))
    if assoc.is_aborted:
        return aborted_request(remote)
    return no_answer(remote)


ENGINE = os.environ.get("STGCMT_ENGINE", "asyncio")
"""The engine behind the seam in this process."""

if ENGINE == "asyncio":
    from .engine import api as _asyncio_engine

    Server = _asyncio_engine.Server
    Association = _asyncio_engine.Association
    Link = _asyncio_engine.Link
    open_association = _asyncio_engine.open_association
elif ENGINE != "pynetdicom":
    raise ImportError(f"STGCMT_ENGINE={ENGINE!r}: choose 'pynetdicom' or 'asyncio'")
