"""The services' side of an association: :class:`EngineLink` (what a service sends on it) and
:class:`Services` (the requests received on it, turned into calls on :class:`.seam.Handlers`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial

from pydicom.dataset import Dataset
from pydicom.uid import UID

from stgcmt.dicom import codec
from stgcmt.dicom.datasets import encode_data_set
from stgcmt.dicom.part10 import MalformedDataset, scanned_attributes
from stgcmt.dicom.uids import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN
from stgcmt.ul.acse import PresentationContext
from stgcmt.ul.association import UpperLayer
from stgcmt.ul.dimse import STATUS, CommandField, CommandSet, Message
from stgcmt.ul.engine import run
from stgcmt.ul.exchange import Answer
from stgcmt.ul.messages import CStoreRq, NActionRq, NEventReportRq, Response
from stgcmt.ul.seam import (
    ActionRequest,
    EventReport,
    Handlers,
    Information,
    PeerInfo,
    StoreRequest,
    StoreSink,
)

log = logging.getLogger("stgcmt.engine")

UNRECOGNIZED_OPERATION = 0x0211
HELD_WHOLE_SYNTAXES = frozenset((EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN))
"""Data sets never streamed: their first bytes cannot be read alone (pydicom reads them)."""


def _encode(information: Information, transfer_syntax: str) -> bytes:
    """Commitment datasets by hand when the syntax allows (fast even for 100,000 references),
    anything else with pydicom."""
    syntax = UID(transfer_syntax)
    if isinstance(information, Dataset):
        return encode_data_set(information, transfer_syntax)
    if syntax.is_little_endian and not syntax.is_deflated:
        return codec.encode(information, syntax.is_implicit_VR)
    return encode_data_set(codec.as_dataset(information), transfer_syntax)


class EngineLink:
    """An established association, seen from a service (satisfies :class:`.seam.Link`)."""

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
        report = NEventReportRq(event_type_id)
        return self.request(report.affected_sop_class_uid, report.command(), information)

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
        return Response.from_command(response.command).status


class Services:
    """Turns the requests received on one association into calls on :class:`Handlers`."""

    def __init__(self, handlers: Handlers, association: UpperLayer, link: EngineLink) -> None:
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

    def streams(self, message: Message, first: bytes) -> bool:
        """A C-STORE is streamed when a handler takes it so, its syntax can be read from the
        first bytes, and they hold every attribute it is checked and indexed by (else it is
        held whole, as far as ``max_dataset_bytes`` allows)."""
        if self.handlers.c_store_stream is None or message.command_field != CommandField.C_STORE_RQ:
            return False
        syntax = self._transfer_syntax(message)
        if syntax in HELD_WHOLE_SYNTAXES:
            return False
        try:
            scanned_attributes(first, syntax)
        except MalformedDataset:
            return False
        return True

    def begin(self, message: Message) -> StoreSink | Answer:
        assert self.handlers.c_store_stream is not None
        begun = self.handlers.c_store_stream(self._store_request(message))
        return Answer(begun) if isinstance(begun, int) else begun

    def closed(self) -> None:
        if self.handlers.closed is not None:
            self.handlers.closed(self.link)

    def _transfer_syntax(self, message: Message) -> str:
        return self.association.contexts[message.context_id].transfer_syntax

    def _store_request(self, message: Message) -> StoreRequest:
        command = CStoreRq.from_command(message.command)
        return StoreRequest(
            peer=self.link.peer,
            sop_class_uid=command.affected_sop_class_uid,
            sop_instance_uid=command.affected_sop_instance_uid,
            transfer_syntax=self._transfer_syntax(message),
            dataset=message.data_set or b"",
            abstract_syntax=self.association.contexts[message.context_id].abstract_syntax,
        )

    def _c_store(self, message: Message) -> Answer:
        assert self.handlers.c_store is not None
        return Answer(self.handlers.c_store(self._store_request(message)))

    def _information(self, message: Message) -> tuple[bytes | None, bool, bool]:
        """The data set as received, and its encoding: the service decodes it."""
        syntax = UID(self._transfer_syntax(message))
        return message.data_set or None, syntax.is_implicit_VR, syntax.is_little_endian

    def _n_action(self, message: Message) -> Answer:
        assert self.handlers.n_action is not None
        command = NActionRq.from_command(message.command)
        request = ActionRequest(
            self.link.peer,
            command.requested_sop_class_uid,
            command.requested_sop_instance_uid,
            command.action_type_id,
            *self._information(message),
        )
        status, reply = self.handlers.n_action(self.link, request)
        data = None if reply is None else encode_data_set(reply, self._transfer_syntax(message))
        return Answer(status, data, self._then(self.handlers.n_action_answered))

    def _n_event_report(self, message: Message) -> Answer:
        assert self.handlers.n_event_report is not None
        report = EventReport(
            self.link.peer,
            NEventReportRq.from_command(message.command).event_type_id,
            *self._information(message),
        )
        status = self.handlers.n_event_report(self.link, report)
        return Answer(status, None, self._then(self.handlers.n_event_report_answered))

    def _then(self, answered: Callable[[EngineLink], None] | None) -> Callable[[], None] | None:
        return None if answered is None else partial(answered, self.link)
