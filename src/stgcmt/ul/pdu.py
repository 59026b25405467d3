"""Upper layer PDUs and their items (PS3.8 §9.3), encoded and decoded by hand.

Only what stgcmt negotiates is modelled: presentation contexts, Maximum Length, Implementation
Class UID / Version Name and SCP/SCU Role Selection. Other user information sub-items (e.g.
Asynchronous Operations Window) are skipped when received, which PS3.8 allows: an acceptor that
does not answer them has declined them.

Every decoder raises :class:`PDUError` (never IndexError, struct.error or UnicodeError) so the
state machine can answer anything malformed with an A-ABORT instead of crashing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Self

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

# Item types
APPLICATION_CONTEXT_ITEM = 0x10
PRESENTATION_CONTEXT_ITEM_RQ = 0x20
PRESENTATION_CONTEXT_ITEM_AC = 0x21
ABSTRACT_SYNTAX_SUB_ITEM = 0x30
TRANSFER_SYNTAX_SUB_ITEM = 0x40
USER_INFORMATION_ITEM = 0x50
MAXIMUM_LENGTH_SUB_ITEM = 0x51
IMPLEMENTATION_CLASS_UID_SUB_ITEM = 0x52
ROLE_SELECTION_SUB_ITEM = 0x54
IMPLEMENTATION_VERSION_NAME_SUB_ITEM = 0x55

# Presentation context results (PS3.8 Table 9-18)
ACCEPTANCE = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# A-ABORT source and reason/diag (PS3.8 Table 9-26)
ABORT_SERVICE_USER = 0
ABORT_SERVICE_PROVIDER = 2
REASON_NOT_SPECIFIED = 0
REASON_UNRECOGNIZED_PDU = 1
REASON_UNEXPECTED_PDU = 2
REASON_INVALID_PDU_PARAMETER = 6

PDU_HEADER_LENGTH = 6
"""PDU-type, reserved byte and the 4-byte PDU-length."""
PDV_HEADER_LENGTH = 6
"""Item-length (4), Presentation-context-ID (1) and Message Control Header (1)."""

_PDU_HEADER = struct.Struct(">BxL")
_ITEM_HEADER = struct.Struct(">BxH")
_ASSOCIATE_FIXED = struct.Struct(">Hxx16s16s32x")
_FOUR_BYTES = struct.Struct(">xBBB")
_PDV_HEADER = struct.Struct(">LBB")


class PDUError(ValueError):
    """A PDU that cannot be decoded; ``reason`` is the A-ABORT reason to answer it with."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PDU_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


def _text(raw: bytes) -> str:
    """UIDs and AE titles: ASCII, padded with NUL or spaces by various implementations."""
    try:
        return raw.decode("ascii").rstrip("\0 ").lstrip(" ")
    except UnicodeDecodeError:
        raise PDUError(f"non-ASCII text {raw[:32]!r}") from None


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} of {len(value)} bytes is too long")
    return _ITEM_HEADER.pack(item_type, len(value)) + value


def _uid_item(item_type: int, uid: str) -> bytes:
    return _item(item_type, uid.encode("ascii"))


def _items(data: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """Split a run of items (or sub-items) into (type, value), checking every length."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if len(view) - offset < _ITEM_HEADER.size:
            raise PDUError("truncated item header")
        item_type, length = _ITEM_HEADER.unpack_from(view, offset)
        start = offset + _ITEM_HEADER.size
        offset = start + length
        if offset > len(view):
            raise PDUError(f"item 0x{item_type:02X} overruns its PDU")
        yield item_type, view[start:offset]


def _ae_title(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


# -- items ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresentationContextItemRQ:
    """Presentation Context Item (20H): one abstract syntax, the transfer syntaxes offered."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def encode(self) -> bytes:
        sub_items = _uid_item(ABSTRACT_SYNTAX_SUB_ITEM, self.abstract_syntax) + b"".join(
            _uid_item(TRANSFER_SYNTAX_SUB_ITEM, ts) for ts in self.transfer_syntaxes
        )
        return _item(PRESENTATION_CONTEXT_ITEM_RQ, bytes((self.context_id, 0, 0, 0)) + sub_items)

    @classmethod
    def decode(cls, value: memoryview) -> PresentationContextItemRQ:
        if len(value) < 4:
            raise PDUError("truncated presentation context item")
        abstract, syntaxes = None, []
        for sub_type, sub_value in _items(value[4:]):
            if sub_type == ABSTRACT_SYNTAX_SUB_ITEM:
                abstract = _text(bytes(sub_value))
            elif sub_type == TRANSFER_SYNTAX_SUB_ITEM:
                syntaxes.append(_text(bytes(sub_value)))
        if abstract is None or not syntaxes:
            raise PDUError(f"presentation context {value[0]} lacks its syntaxes")
        return cls(value[0], abstract, tuple(syntaxes))


@dataclass(frozen=True)
class PresentationContextItemAC:
    """Presentation Context Item (21H): the acceptor's result and the transfer syntax chosen
    (not significant unless the result is acceptance)."""

    context_id: int
    result: int
    transfer_syntax: str

    def encode(self) -> bytes:
        sub_item = _uid_item(TRANSFER_SYNTAX_SUB_ITEM, self.transfer_syntax)
        fixed = bytes((self.context_id, 0, self.result, 0))
        return _item(PRESENTATION_CONTEXT_ITEM_AC, fixed + sub_item)

    @classmethod
    def decode(cls, value: memoryview) -> PresentationContextItemAC:
        if len(value) < 4:
            raise PDUError("truncated presentation context item")
        syntaxes = [_text(bytes(v)) for t, v in _items(value[4:]) if t == TRANSFER_SYNTAX_SUB_ITEM]
        return cls(value[0], value[2], syntaxes[0] if syntaxes else "")


@dataclass(frozen=True)
class RoleSelectionItem:
    """SCP/SCU Role Selection Sub-Item (54H). Proposed by a requester that wants roles other
    than the default (requester SCU only); the acceptor answers with what it accepts."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def encode(self) -> bytes:
        uid = self.sop_class_uid.encode("ascii")
        value = struct.pack(">H", len(uid)) + uid + bytes((self.scu_role, self.scp_role))
        return _item(ROLE_SELECTION_SUB_ITEM, value)

    @classmethod
    def decode(cls, value: memoryview) -> RoleSelectionItem:
        if len(value) < 2:
            raise PDUError("truncated role selection item")
        (uid_length,) = struct.unpack_from(">H", value)
        if len(value) != 2 + uid_length + 2:
            raise PDUError("role selection item of inconsistent length")
        uid = _text(bytes(value[2 : 2 + uid_length]))
        return cls(uid, bool(value[-2]), bool(value[-1]))


@dataclass(frozen=True)
class UserInformationItem:
    """User Information Item (50H) with the sub-items we negotiate. ``maximum_length`` 0 means
    no limit (PS3.8 D.1)."""

    maximum_length: int = 0
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    role_selection: tuple[RoleSelectionItem, ...] = ()

    def encode(self) -> bytes:
        sub_items = [_item(MAXIMUM_LENGTH_SUB_ITEM, struct.pack(">L", self.maximum_length))]
        sub_items.append(
            _uid_item(IMPLEMENTATION_CLASS_UID_SUB_ITEM, self.implementation_class_uid)
        )
        sub_items.extend(role.encode() for role in self.role_selection)
        if self.implementation_version_name:
            name = self.implementation_version_name.encode("ascii")
            sub_items.append(_item(IMPLEMENTATION_VERSION_NAME_SUB_ITEM, name))
        return _item(USER_INFORMATION_ITEM, b"".join(sub_items))

    @classmethod
    def decode(cls, value: memoryview) -> UserInformationItem:
        maximum_length, class_uid, version_name = 0, "", ""
        roles = []
        for sub_type, sub_value in _items(value):
            if sub_type == MAXIMUM_LENGTH_SUB_ITEM:
                if len(sub_value) != 4:
                    raise PDUError("maximum length sub-item is not 4 bytes")
                (maximum_length,) = struct.unpack(">L", sub_value)
            elif sub_type == IMPLEMENTATION_CLASS_UID_SUB_ITEM:
                class_uid = _text(bytes(sub_value))
            elif sub_type == IMPLEMENTATION_VERSION_NAME_SUB_ITEM:
                version_name = _text(bytes(sub_value))
            elif sub_type == ROLE_SELECTION_SUB_ITEM:
                roles.append(RoleSelectionItem.decode(sub_value))
        return cls(maximum_length, class_uid, version_name, tuple(roles))


@dataclass(frozen=True)
class PresentationDataValueItem:
    """One PDV: a fragment of a command set or data set (PS3.8 E.2). Message Control Header
    bit 0: command (1) or data set (0); bit 1: last fragment."""

    context_id: int
    message_control_header: int
    data: bytes | memoryview

    @property
    def is_command(self) -> bool:
        return bool(self.message_control_header & 0x01)

    @property
    def is_last(self) -> bool:
        return bool(self.message_control_header & 0x02)


def message_control_header(*, command: bool, last: bool) -> int:
    return (0x01 if command else 0) | (0x02 if last else 0)


# -- PDUs ----------------------------------------------------------------------------------------


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _PDU_HEADER.pack(pdu_type, len(body)) + body


def _associate_body(
    called: str, calling: str, contexts: bytes, user_information: UserInformationItem
) -> bytes:
    fixed = _ASSOCIATE_FIXED.pack(PROTOCOL_VERSION, _ae_title(called), _ae_title(calling))
    application_context = _uid_item(APPLICATION_CONTEXT_ITEM, APPLICATION_CONTEXT_NAME)
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
        for item_type, value in _items(memoryview(body)[_ASSOCIATE_FIXED.size :]):
            if item_type == APPLICATION_CONTEXT_ITEM:
                application_context = _text(bytes(value))
            elif item_type == context_item_type:
                contexts.append(value)
            elif item_type == USER_INFORMATION_ITEM:
                user_information = UserInformationItem.decode(value)
        return cls(
            version, _text(called), _text(calling), application_context, contexts, user_information
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
    return _PDU_HEADER.pack(P_DATA_TF_TYPE, pdv_length + 4) + _PDV_HEADER.pack(
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


MAX_ASSOCIATE_PDU = 1 << 20
"""Largest A-ASSOCIATE-RQ/-AC body we read: 128 contexts offering 30 transfer syntaxes of 64
characters each need about 280 KiB, so a bigger one is not a legitimate request."""
MAX_SMALL_PDU = 64
"""Largest A-ASSOCIATE-RJ, A-RELEASE-RQ/-RP or A-ABORT body we read (PS3.8 fixes them at 4)."""

PDULimit = Callable[[int, int], None]
"""Called with (PDU-type, PDU-length) as soon as a header arrives, before its body is read;
raises :class:`PDUError` to refuse the PDU."""


def no_limit(pdu_type: int, length: int) -> None:
    """For decoding streams we produced ourselves (tests, tools)."""


class PDUReader:
    """Cuts a byte stream, arriving in arbitrary pieces, into (PDU-type, body) pairs.

    Every header is shown to ``limit`` before its body is buffered, so a peer announcing a
    4 GB PDU is refused from 6 bytes: what is buffered never exceeds the largest PDU the limit
    allows plus one read."""

    def __init__(self, limit: PDULimit = no_limit) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._checked = False  # the header at the front of the buffer was shown to the limit

    @property
    def partial(self) -> bool:
        """Some bytes of a PDU have arrived, not all of them."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        offset = 0
        try:
            while len(buffer) - offset >= PDU_HEADER_LENGTH:
                pdu_type, length = _PDU_HEADER.unpack_from(buffer, offset)
                if not self._checked:
                    self._limit(pdu_type, length)
                    self._checked = True
                end = offset + PDU_HEADER_LENGTH + length
                if end > len(buffer):
                    break
                body = bytes(buffer[offset + PDU_HEADER_LENGTH : end])
                offset = end
                self._checked = False
                yield pdu_type, body
        finally:
            del buffer[:offset]

    def clear(self) -> None:
        """Give the buffer back (the connection is over, or refused what it holds)."""
        self._buffer = bytearray()
        self._checked = False
