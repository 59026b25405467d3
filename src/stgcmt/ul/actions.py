"""What each action of the PS3.8 state machine (§9.2, Table 9-10) does, as
:class:`.association.UpperLayer` carries it out: the AE- (establishment), AR- (release) and
AA- (abort) actions, and :data:`ACTIONS`, the table from action to method (DT-1 and DT-2 are
the DIMSE half, :mod:`.exchange`).

Where our actions do more or less than PS3.8 says: AE-4, AE-8, AA-1, AA-7 and AA-8 close the
transport at once rather than wait for the peer to (ARTIM bounds only Sta2 and the wait after
our A-RELEASE-RP).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stgcmt.ul.acse import PresentationContext, agreed_contexts
from stgcmt.ul.exchange import RELEASE, MessageExchange, ServiceUser, resolve
from stgcmt.ul.fsm import Action, Event
from stgcmt.ul.negotiation_log import dump_rq, log_negotiation, log_rejection
from stgcmt.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
)
from stgcmt.ul.pdu_items import (
    ABORT_SERVICE_PROVIDER,
    PDV_HEADER_LENGTH,
    REASON_INVALID_PDU_PARAMETER,
)
from stgcmt.ul.registry import Registry
from stgcmt.ul.tasks import spawn

if TYPE_CHECKING:
    from stgcmt.ul.association import Negotiator

log = logging.getLogger("stgcmt.engine")


def max_pdu_too_small(max_pdu: int) -> bool:
    """A peer's Maximum Length that cannot carry one byte of a fragment (0 means unlimited)."""
    return 0 < max_pdu <= PDV_HEADER_LENGTH


@dataclass(frozen=True)
class Abort:
    """What an A-ABORT PDU we send says."""

    source: int = 0
    reason: int = 0


class AssociationActions(MessageExchange):
    """The actions of the table; :class:`.association.UpperLayer` provides the state, the
    transport, the timers and the table's :meth:`_event`."""

    is_requester: bool
    user: ServiceUser | None
    address: tuple[str, int]
    associated: asyncio.Future[A_ASSOCIATE_AC | A_ASSOCIATE_RJ | A_ABORT | None]
    _request: A_ASSOCIATE_RQ | None
    _negotiator: Negotiator | None
    _registry: Registry[Any] | None
    _serving: bool
    _released: asyncio.Future[None]

    def _event(self, event: Event, payload: Any = None) -> None:
        raise NotImplementedError

    def _start_artim(self, seconds: float | None = None) -> None:
        raise NotImplementedError

    def _stop_artim(self) -> None:
        raise NotImplementedError

    def drop(self, why: str) -> None:
        raise NotImplementedError

    @property
    def _rq_deadline(self) -> float:
        raise NotImplementedError

    async def _answer_rq(self, negotiator: Negotiator, rq: A_ASSOCIATE_RQ) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close_transport(self, _: object = None) -> None:
        if self._transport is not None:
            self._transport.close()

    def _nothing(self, _: object = None) -> None:
        """AE-1 (the caller connects), DT-1/AR-7 (:mod:`.exchange` writes), AA-4/AA-5/AR-5
        (:meth:`connection_lost` tidies up), AA-6 (ignore the PDU)."""

    def _ae2_send_rq(self, _: object) -> None:
        assert self._request is not None
        dump_rq(self, self._request, sent=True)
        self._write(self._request.encode())

    def _ae3_accepted(self, answer: A_ASSOCIATE_AC) -> None:
        assert self._request is not None
        log_negotiation(self, self._request, answer, requester=True)
        self.peer_max_pdu = answer.user_information.maximum_length
        if max_pdu_too_small(self.peer_max_pdu):
            self.abort(ABORT_SERVICE_PROVIDER, REASON_INVALID_PDU_PARAMETER)
        else:
            proposed = self._request.presentation_contexts
            self._establish(agreed_contexts(proposed, answer.presentation_contexts))
        resolve(self.associated, answer)  # the caller explains a too small maximum

    def _ae4_rejected(self, answer: A_ASSOCIATE_RJ) -> None:
        log_rejection(self, answer, sent=False)
        self._close_transport()
        resolve(self.associated, answer)

    def _ae5_connected(self, _: object) -> None:
        if self._registry is not None:
            self._registry.add_pending(self)
        self._start_artim(self._rq_deadline)

    def _ae6_rq_received(self, rq: A_ASSOCIATE_RQ) -> None:
        assert self._negotiator is not None
        self._stop_artim()
        dump_rq(self, rq, sent=False)
        self.peer_max_pdu = rq.user_information.maximum_length
        if max_pdu_too_small(self.peer_max_pdu):
            log.warning(
                "%s: refused: the peer's maximum PDU length %d cannot carry a fragment",
                self,
                self.peer_max_pdu,
            )  # permanent, service user, no reason given
            self._event(Event.ASSOCIATE_REJECT, A_ASSOCIATE_RJ(1, 1, 1))
            return
        if self._registry is not None:
            self._registry.activate(self)
        spawn(self._answer_rq(self._negotiator, rq))

    def _ae7_send_ac(self, answer: tuple[A_ASSOCIATE_RQ, A_ASSOCIATE_AC]) -> None:
        rq, ac = answer
        log_negotiation(self, rq, ac, requester=False)
        self._write(ac.encode())
        self._establish(agreed_contexts(rq.presentation_contexts, ac.presentation_contexts))

    def _ae8_send_rj(self, rj: A_ASSOCIATE_RJ) -> None:
        log_rejection(self, rj, sent=True)
        self._write(rj.encode())
        self._close_transport()

    def _establish(self, contexts: dict[int, PresentationContext]) -> None:
        assert self.user is not None
        self.contexts = contexts
        self._serving = True
        name = f"stgcmt-association-{self.address[1]}"
        threading.Thread(target=self._serve, args=(self.user,), name=name, daemon=True).start()

    def _ar1_send_release_rq(self, _: object) -> None:
        self._write(A_RELEASE_RQ().encode())

    def _ar2_peer_releases(self, _: object) -> None:
        self._fail_pending()  # a peer that releases answers nothing more
        self._inbox.put(RELEASE)  # answered once earlier requests are (Evt14, AR-4)

    def _ar3_released(self, _: object) -> None:
        resolve(self._released, None)
        self._close_transport()

    def _ar4_send_release_rp(self, _: object) -> None:
        self._write(A_RELEASE_RP().encode())
        self._start_artim()

    def _ar8_collision(self, _: object) -> None:
        if self.is_requester:  # Sta9: the requester answers first (PS3.8 §7.2.3)
            self._event(Event.RELEASE_RESPONSE)

    def _ar9_send_release_rp(self, _: object) -> None:
        self._write(A_RELEASE_RP().encode())

    def _ar10_released(self, _: object) -> None:
        resolve(self._released, None)
        self._event(Event.RELEASE_RESPONSE)  # Sta12: now we answer, and the requester closes

    def _aa1_send_abort(self, abort: Abort) -> None:
        self._write(A_ABORT(abort.source, abort.reason).encode())
        self._close_transport()

    def _aa3_aborted(self, pdu: A_ABORT) -> None:
        log.info("%s: aborted by the peer (source %d, reason %d)", self, pdu.source, pdu.reason)
        resolve(self.associated, pdu)
        self._close_transport()

    def _aa2_close(self, pdu: A_ABORT | None) -> None:
        self._stop_artim()
        if pdu is not None:
            self._aa3_aborted(pdu)
        else:
            self._close_transport()


ACTIONS: dict[Action, Callable[[AssociationActions, Any], None]] = {
    Action.AE_1: AssociationActions._nothing,
    Action.AE_2: AssociationActions._ae2_send_rq,
    Action.AE_3: AssociationActions._ae3_accepted,
    Action.AE_4: AssociationActions._ae4_rejected,
    Action.AE_5: AssociationActions._ae5_connected,
    Action.AE_6: AssociationActions._ae6_rq_received,
    Action.AE_7: AssociationActions._ae7_send_ac,
    Action.AE_8: AssociationActions._ae8_send_rj,
    Action.DT_1: AssociationActions._nothing,
    Action.DT_2: AssociationActions._on_p_data,
    Action.AR_1: AssociationActions._ar1_send_release_rq,
    Action.AR_2: AssociationActions._ar2_peer_releases,
    Action.AR_3: AssociationActions._ar3_released,
    Action.AR_4: AssociationActions._ar4_send_release_rp,
    Action.AR_5: AssociationActions._nothing,
    Action.AR_6: AssociationActions._on_p_data,
    Action.AR_7: AssociationActions._nothing,
    Action.AR_8: AssociationActions._ar8_collision,
    Action.AR_9: AssociationActions._ar9_send_release_rp,
    Action.AR_10: AssociationActions._ar10_released,
    Action.AA_1: AssociationActions._aa1_send_abort,
    Action.AA_2: AssociationActions._aa2_close,
    Action.AA_3: AssociationActions._aa3_aborted,
    Action.AA_4: AssociationActions._nothing,
    Action.AA_5: AssociationActions._nothing,
    Action.AA_6: AssociationActions._nothing,
    Action.AA_7: AssociationActions._aa1_send_abort,
    Action.AA_8: AssociationActions._aa1_send_abort,
}
"""Each action of the table, as :class:`.association.UpperLayer` carries it out."""
