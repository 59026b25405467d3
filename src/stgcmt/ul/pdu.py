"""The upper layer PDUs (PS3.8 §9.3), encoded and decoded by hand; their items are in
:mod:`.pdu_items`, and :mod:`.pdu_reader` cuts a byte stream into them.

Every decoder raises :class:`~.pdu_items.PDUError` so the state machine can answer anything
malformed with an A-ABORT instead of crashing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from stgcmt.ul.pdu_items import (
    ABORT_SERVICE_USER,
    APPLICATION_CONTEXT_ITEM,
    PDV_HEADER_LENGTH,
    PRESENTATION_CONTEXT_ITEM_AC,
    PRESENTATION_CONTEXT_ITEM_RQ,
    REASON_NOT_SPECIFIED,
    REASON_UNRECOGNIZED_PDU,
    USER_INFORMATION_ITEM,
    PDUError,
    PresentationContextItemAC,
    PresentationContextItemRQ,
    PresentationDataValueItem,
    UserInformationItem,
    decode_text,
    encode_uid_item,
    split_items,
)

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
"""The DICOM Application Context Name (PS3.7 Annex A.2.1)."""

PROTOCOL_VERSION = 0x0001

# PDU types (PS3.8 Table 9-11)
A_ASSOCIATE_RQ_TYPE = 0x01
A_ASSOCIATE_AC_TYPE = 0x02
A_ASSOCIATE_RJ_TYPE = 0x03
P_DATA_TF_TYPE = 0x04
A_RELEASE_RQ_TYPE = 0x05
A_RELEASE_RP_TYPE = 0x06
A_ABORT_TYPE = 0x07

PDU_HEADER_LENGTH = 6
"""PDU-type, reserved byte and the 4-byte PDU-length."""
PDU_HEADER = struct.Struct(">BxL")
"""The PDU header: type, reserved byte, length."""
_ASSOCIATE_FIXED = struct.Struct(">Hxx16s16s32x")
_FOUR_BYTES = struct.Struct(">xBBB")
_PDV_HEADER = struct.Struct(">LBB")


def _ae_title(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return PDU_HEADER.pack(pdu_type, len(body)) + body


def _associate_body(
    called: str, calling: str, contexts: bytes, user_information: UserInformationItem
) -> bytes:
    fixed = _ASSOCIATE_FIXED.pack(PROTOCOL_VERSION, _ae_title(called), _ae_title(calling))
    application_context = encode_uid_item(APPLICATION_CONTEXT_ITEM, APPLICATION_CONTEXT_NAME)
    return fixed + application_context + contexts + user_information.encode()


@dataclass(frozen=True)
class _AssociateFields:
    """What A-ASSOCIATE-RQ and -AC share once decoded: fixed fields and the raw items."""

    protocol_version: int
    called_ae_title: str
    calling_ae_title: str
    application_context_name: str
    contexts: list[memoryview]
    user_information: UserInformationItem

    @classmethod
    def decode(cls, body: bytes, context_item_type: int) -> _AssociateFields:
        if len(body) < _ASSOCIATE_FIXED.size:
            raise PDUError("truncated A-ASSOCIATE PDU")
        version, called, calling = _ASSOCIATE_FIXED.unpack_from(body)
        application_context, contexts = "", []
        user_information = UserInformationItem()
        for item_type, value in split_items(memoryview(body)[_ASSOCIATE_FIXED.size :]):
            if item_type == APPLICATION_CONTEXT_ITEM:
                application_context = decode_text(bytes(value))
            elif item_type == context_item_type:
                contexts.append(value)
            elif item_type == USER_INFORMATION_ITEM:
                user_information = UserInformationItem.decode(value)
        return cls(
            version,
            decode_text(called),
            decode_text(calling),
            application_context,
            contexts,
            user_information,
        )


@dataclass(frozen=True)
class _AssociatePDU:
    """What A-ASSOCIATE-RQ and -AC share (PS3.8 9.3.2, 9.3.3): they differ only in the PDU
    type and the kind of presentation context item."""

    PDU_TYPE: ClassVar[int]
    CONTEXT_ITEM_TYPE: ClassVar[int]
    CONTEXT_ITEM: ClassVar[Any]

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[Any, ...]
    user_information: UserInformationItem
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        contexts = b"".join(cx.encode() for cx in self.presentation_contexts)
        body = _associate_body(
            self.called_ae_title, self.calling_ae_title, contexts, self.user_information
        )
        return _pdu(self.PDU_TYPE, body)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        fields = _AssociateFields.decode(body, cls.CONTEXT_ITEM_TYPE)
        return cls(
            fields.called_ae_title,
            fields.calling_ae_title,
            tuple(cls.CONTEXT_ITEM.decode(v) for v in fields.contexts),
            fields.user_information,
            fields.application_context_name,
            fields.protocol_version,
        )


@dataclass(frozen=True)
class A_ASSOCIATE_RQ(_AssociatePDU):  # noqa: N801 - named after the standard
    PDU_TYPE = A_ASSOCIATE_RQ_TYPE
    CONTEXT_ITEM_TYPE = PRESENTATION_CONTEXT_ITEM_RQ
    CONTEXT_ITEM = PresentationContextItemRQ

    presentation_contexts: tuple[PresentationContextItemRQ, ...]


@dataclass(frozen=True)
class A_ASSOCIATE_AC(_AssociatePDU):  # noqa: N801
    """The AE title fields are reserved in an AC but carry the RQ's values (PS3.8 9.3.3)."""

    PDU_TYPE = A_ASSOCIATE_AC_TYPE
    CONTEXT_ITEM_TYPE = PRESENTATION_CONTEXT_ITEM_AC
    CONTEXT_ITEM = PresentationContextItemAC

    presentation_contexts: tuple[PresentationContextItemAC, ...]


def _four_byte_body(body: bytes, name: str) -> tuple[int, int, int]:
    if len(body) != 4:
        raise PDUError(f"{name} must be 4 bytes, not {len(body)}")
    return _FOUR_BYTES.unpack(body)


@dataclass(frozen=True)
class A_ASSOCIATE_RJ:  # noqa: N801
    """Result 1 permanent / 2 transient; source 1 service user, 2 ACSE provider, 3 presentation
    provider; reason/diag per source (PS3.8 Table 9-21)."""

    result: int
    source: int
    reason: int

    def encode(self) -> bytes:
        return _pdu(A_ASSOCIATE_RJ_TYPE, bytes((0, self.result, self.source, self.reason)))

    @classmethod
    def decode(cls, body: bytes) -> A_ASSOCIATE_RJ:
        return cls(*_four_byte_body(body, "A-ASSOCIATE-RJ"))


@dataclass(frozen=True)
class P_DATA_TF:  # noqa: N801
    items: tuple[PresentationDataValueItem, ...]

    def encode(self) -> bytes:
        return _pdu(P_DATA_TF_TYPE, b"".join(_pdv_bytes(pdv) for pdv in self.items))

    @classmethod
    def decode(cls, body: bytes) -> P_DATA_TF:
        """The hot path: PDV data are views on ``body``, not copies."""
        view = memoryview(body)
        items, offset = [], 0
        while offset < len(view):
            if len(view) - offset < PDV_HEADER_LENGTH:
                raise PDUError("truncated presentation data value item")
            length, context_id, header = _PDV_HEADER.unpack_from(view, offset)
            end = offset + 4 + length
            if length < 2 or end > len(view):
                raise PDUError(f"presentation data value item of length {length} overruns")
            items.append(PresentationDataValueItem(context_id, header, view[offset + 6 : end]))
            offset = end
        if not items:
            raise PDUError("P-DATA-TF without presentation data value items")
        return cls(tuple(items))


def _pdv_bytes(pdv: PresentationDataValueItem) -> bytes:
    header = _PDV_HEADER.pack(len(pdv.data) + 2, pdv.context_id, pdv.message_control_header)
    return header + bytes(pdv.data)


def p_data_tf_header(context_id: int, header: int, data_length: int) -> bytes:
    """PDU header plus PDV header for a P-DATA-TF carrying one PDV of ``data_length`` bytes,
    so a fragment can be sent without copying it into a new PDU."""
    pdv_length = data_length + 2
    return PDU_HEADER.pack(P_DATA_TF_TYPE, pdv_length + 4) + _PDV_HEADER.pack(
        pdv_length, context_id, header
    )


@dataclass(frozen=True)
class A_RELEASE_RQ:  # noqa: N801
    def encode(self) -> bytes:
        return _pdu(A_RELEASE_RQ_TYPE, bytes(4))

    @classmethod
    def decode(cls, body: bytes) -> A_RELEASE_RQ:
        _four_byte_body(body, "A-RELEASE-RQ")
        return cls()


@dataclass(frozen=True)
class A_RELEASE_RP:  # noqa: N801
    def encode(self) -> bytes:
        return _pdu(A_RELEASE_RP_TYPE, bytes(4))

    @classmethod
    def decode(cls, body: bytes) -> A_RELEASE_RP:
        _four_byte_body(body, "A-RELEASE-RP")
        return cls()


@dataclass(frozen=True)
class A_ABORT:  # noqa: N801
    """Source 0 service user, 2 service provider (then ``reason`` says why)."""

    source: int = ABORT_SERVICE_USER
    reason: int = REASON_NOT_SPECIFIED

    def encode(self) -> bytes:
        return _pdu(A_ABORT_TYPE, bytes((0, 0, self.source, self.reason)))

    @classmethod
    def decode(cls, body: bytes) -> A_ABORT:
        _, source, reason = _four_byte_body(body, "A-ABORT")
        return cls(source, reason)


PDU = (
    A_ASSOCIATE_RQ
    | A_ASSOCIATE_AC
    | A_ASSOCIATE_RJ
    | P_DATA_TF
    | A_RELEASE_RQ
    | A_RELEASE_RP
    | A_ABORT
)

_DECODERS: dict[int, Callable[[bytes], PDU]] = {
    A_ASSOCIATE_RQ_TYPE: A_ASSOCIATE_RQ.decode,
    A_ASSOCIATE_AC_TYPE: A_ASSOCIATE_AC.decode,
    A_ASSOCIATE_RJ_TYPE: A_ASSOCIATE_RJ.decode,
    P_DATA_TF_TYPE: P_DATA_TF.decode,
    A_RELEASE_RQ_TYPE: A_RELEASE_RQ.decode,
    A_RELEASE_RP_TYPE: A_RELEASE_RP.decode,
    A_ABORT_TYPE: A_ABORT.decode,
}


def decode_pdu(pdu_type: int, body: bytes) -> PDU:
    decoder = _DECODERS.get(pdu_type)
    if decoder is None:
        raise PDUError(f"unrecognised PDU type 0x{pdu_type:02X}", REASON_UNRECOGNIZED_PDU)
    return decoder(body)
