"""The listening side: :class:`EngineServer` accepts associations and negotiates them."""

from __future__ import annotations

import asyncio
from typing import Self

from stgcmt.config import Timeouts, TlsConfig
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.ul.acse import answer_contexts, answer_roles, user_information
from stgcmt.ul.association import DEFAULT_MAX_PDU, UpperLayer, advertised_max_pdu
from stgcmt.ul.dimse import DEFAULT_MAX_DATA_SET_BYTES
from stgcmt.ul.engine import run
from stgcmt.ul.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, APPLICATION_CONTEXT_NAME
from stgcmt.ul.registry import Registry
from stgcmt.ul.seam import (
    NON_STORAGE_SYNTAXES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    Handlers,
    PeerInfo,
    Rejection,
    next_association_id,
)
from stgcmt.ul.services import EngineLink, Services
from stgcmt.ul.tls import TlsGate, server_ssl_context


def associate_rj(rejection: Rejection) -> A_ASSOCIATE_RJ:
    return A_ASSOCIATE_RJ(*rejection.codes())


def _supported_syntaxes(storage: bool, commitment: bool) -> dict[str, tuple[str, ...]]:
    supported = {VERIFICATION: NON_STORAGE_SYNTAXES}
    if commitment:
        supported[STORAGE_COMMITMENT_PUSH_MODEL] = NON_STORAGE_SYNTAXES
    if storage:
        supported.update(dict.fromkeys(STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES))
    return supported


STOP_GRACE = 2.0
"""Seconds a stopping server waits for open associations to end before aborting them."""


class EngineServer:
    """A listening AE (satisfies :class:`.seam.Server`); started and stopped as a context
    manager."""

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
        reuse_port: bool = False,
    ) -> None:
        """``max_associations`` counts associations whose A-ASSOCIATE-RQ has arrived;
        ``max_pending_associations`` connections may wait to send theirs (the oldest is
        dropped past it); ``max_pdu`` 0 advertises the default, never "unlimited";
        ``reuse_port`` binds with ``SO_REUSEPORT`` (other processes may listen on the port)."""
        self.aet = aet
        self._address = (bind, port)
        self._reuse_port = reuse_port
        self._handlers = handlers
        self._timeouts = timeouts or Timeouts()
        self._max_pdu = advertised_max_pdu(max_pdu)
        self._max_associations = max_associations
        self._max_dataset_bytes = max_dataset_bytes
        self._ssl_context = server_ssl_context(tls) if tls and tls.enabled else None
        self._supported = _supported_syntaxes(storage, commitment)
        self._role_classes = (STORAGE_COMMITMENT_PUSH_MODEL,) if commitment else ()
        self._registry: Registry[UpperLayer] = Registry(max_pending_associations)
        self._server: asyncio.Server | None = None

    def start(self) -> Self:
        self._server = run(self._listen())
        return self

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        factory = self._new_association if self._ssl_context is None else self._new_tls
        return await loop.create_server(
            factory, *self._address, reuse_address=True, reuse_port=self._reuse_port
        )

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
            self._handlers.tls_failed,
        )

    @property
    def _associations(self) -> set[UpperLayer]:
        """Associations whose A-ASSOCIATE-RQ has arrived, until they are over."""
        return self._registry.active

    async def _negotiate(
        self, association: UpperLayer, rq: A_ASSOCIATE_RQ
    ) -> A_ASSOCIATE_AC | A_ASSOCIATE_RJ:
        if rq.application_context_name != APPLICATION_CONTEXT_NAME:
            return associate_rj(Rejection("application-context"))
        if not rq.protocol_version & 1:
            return associate_rj(Rejection("protocol-version"))
        if len(self._associations) > self._max_associations:
            return associate_rj(Rejection("congestion"))
        host, port = association.address
        proposed = tuple(cx.abstract_syntax for cx in rq.presentation_contexts)
        peer = PeerInfo(
            rq.calling_ae_title, rq.called_ae_title, host, port, next_association_id(), proposed
        )
        if self._handlers.accept is not None:
            rejection = await asyncio.to_thread(self._handlers.accept, peer)
            if rejection is not None:
                return associate_rj(rejection)
        association.user = Services(self._handlers, association, EngineLink(association, peer))
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
