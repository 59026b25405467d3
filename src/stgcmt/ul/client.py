"""The requesting side: :func:`open_association` and the :class:`EngineAssociation` it returns."""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from functools import partial
from pathlib import Path
from typing import Self

from stgcmt.config import RemoteAE, Timeouts, TlsConfig
from stgcmt.dicom.datasets import read_part10_header
from stgcmt.dicom.transcode import transcode
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.ul.acse import propose, user_information
from stgcmt.ul.actions import max_pdu_too_small
from stgcmt.ul.association import DEFAULT_MAX_PDU, UpperLayer, advertised_max_pdu
from stgcmt.ul.engine import run
from stgcmt.ul.messages import CEchoRq, CStoreRq, NActionRq
from stgcmt.ul.pdu import A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from stgcmt.ul.pdu_items import RoleSelectionItem
from stgcmt.ul.seam import (
    AssociationError,
    ContextPlan,
    Handlers,
    Information,
    PeerInfo,
    Unreachable,
    aborted_request,
    cannot_connect,
    next_association_id,
    no_accepted_context,
    no_answer,
    no_commitment,
    rejected,
    requested_contexts,
)
from stgcmt.ul.services import EngineLink, Services
from stgcmt.ul.tls import client_ssl_context, tls_failed

log = logging.getLogger("stgcmt.engine")

READ_CHUNK = 1 << 20
"""C-STORE reads a file's data set in pieces of this size (the first one in the caller's
thread, so a small file costs one hop to the loop)."""


class EngineAssociation:
    """An association we opened (satisfies :class:`.seam.Association`): releases on exit, or
    aborts if the block raised."""

    def __init__(self, association: UpperLayer, link: EngineLink) -> None:
        self._association = association
        self.link = link

    @property
    def peer(self) -> PeerInfo:
        return self.link.peer

    @property
    def is_open(self) -> bool:
        return self.link.is_open

    def n_event_report(self, event_type_id: int, information: Information) -> int | None:
        return self.link.n_event_report(event_type_id, information)

    def checked(self, plan: ContextPlan, remote: object) -> Self:
        """Release and raise if the plan needs Storage Commitment and the peer rejected it."""
        if plan.commitment and plan.require_commitment and not self.accepts_commitment:
            self.release()
            raise AssociationError(no_commitment(remote))
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.release()
        else:
            self.abort()

    @property
    def accepts_commitment(self) -> bool:
        return self.link.context(STORAGE_COMMITMENT_PUSH_MODEL) is not None

    def accepts(self, sop_class_uid: str, transfer_syntax: str) -> bool:
        return self.link.context(sop_class_uid, transfer_syntax) is not None

    def c_echo(self) -> int | None:
        return self.link.request(VERIFICATION, CEchoRq().command())

    def c_store(self, path: Path, transfer_syntax: str | None = None) -> int | None:
        """Send one Part 10 file's data set: as it is on disk, or transcoded from the file's
        transfer syntax to ``transfer_syntax`` (read whole, converted, sent on that context).
        None means no response (outcome unknown) or a file that cannot be sent on this
        association; OSError if unreadable, ValueError if it cannot be transcoded."""
        with open(path, "rb") as f:
            try:
                header = read_part10_header(f)
            except (ValueError, OSError) as exc:
                log.warning("C-STORE of %s: cannot be sent: %s", path, exc)
                return None
            syntax = transfer_syntax or header.transfer_syntax
            context = self.link.context(header.sop_class_uid, syntax)
            if context is None:
                log.warning(
                    "C-STORE of %s: no accepted presentation context for %s in %s",
                    path,
                    header.sop_class_uid,
                    syntax,
                )
                return None
            first = f.read(READ_CHUNK)
            if not first:
                log.warning("C-STORE of %s: the file holds no data set", path)
                return None
            command = CStoreRq(header.sop_class_uid, header.sop_instance_uid).command()
            rest = iter(partial(f.read, READ_CHUNK), b"")
            if syntax != header.transfer_syntax:
                data = transcode(b"".join((first, *rest)), header.transfer_syntax, syntax)
                log.debug("C-STORE of %s: %s -> %s", path, header.transfer_syntax, syntax)
                return self.link.exchange(context, command, (data,))
            return self.link.exchange(context, command, itertools.chain((first,), rest))

    def n_action(self, information: Information) -> int | None:
        return self.link.request(STORAGE_COMMITMENT_PUSH_MODEL, NActionRq().command(), information)

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
) -> EngineAssociation:
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
    assert isinstance(upper.user, Services)
    association = EngineAssociation(upper, upper.user.link)
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
        upper.user = Services(handlers, upper, EngineLink(upper, peer))
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
        raise Unreachable(tls_failed(remote, exc)) from None
    except (OSError, TimeoutError) as exc:
        log.info("cannot connect to %s: %s", remote, exc)
        raise Unreachable(cannot_connect(remote)) from None
    try:
        async with asyncio.timeout(timeouts.acse):
            answer = await upper.associated
    except TimeoutError:
        upper.abort()
        raise Unreachable(no_answer(remote)) from None
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


def peer_max_pdu_too_small(remote: object, max_pdu: int) -> str:
    return (
        f"{remote} accepted with a maximum PDU length of {max_pdu} bytes, too small to carry "
        "any DIMSE message: association aborted (fix the peer's maximum PDU setting)"
    )
