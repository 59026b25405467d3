"""The items and sub-items of the upper layer PDUs (PS3.8 §9.3), encoded and decoded by hand,
and :class:`PDUError`, which every decoder raises.

Only what stgcmt negotiates is modelled: presentation contexts, Maximum Length, Implementation
Class UID / Version Name and SCP/SCU Role Selection. Other user information sub-items (e.g.
Asynchronous Operations Window) are skipped when received, which PS3.8 allows: an acceptor that
does not answer them has declined them.

Every decoder raises :class:`PDUError` (never IndexError, struct.error or UnicodeError) so the
state machine can answer anything malformed with an A-ABORT instead of crashing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

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

PDV_HEADER_LENGTH = 6
"""Item-length (4), Presentation-context-ID (1) and Message Control Header (1)."""

_ITEM_HEADER = struct.Struct(">BxH")


class PDUError(ValueError):
    """A PDU that cannot be decoded; ``reason`` is the A-ABORT reason to answer it with."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PDU_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


def decode_text(raw: bytes) -> str:
    """UIDs and AE titles: ASCII, padded with NUL or spaces by various implementations."""
    try:
        return raw.decode("ascii").rstrip("\0 ").lstrip(" ")
    except UnicodeDecodeError:
        raise PDUError(f"non-ASCII text {raw[:32]!r}") from None


def encode_item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} of {len(value)} bytes is too long")
    return _ITEM_HEADER.pack(item_type, len(value)) + value


def encode_uid_item(item_type: int, uid: str) -> bytes:
    return encode_item(item_type, uid.encode("ascii"))


def split_items(data: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
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


@dataclass(frozen=True)
class PresentationContextItemRQ:
    """Presentation Context Item (20H): one abstract syntax, the transfer syntaxes offered."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def encode(self) -> bytes:
        sub_items = encode_uid_item(ABSTRACT_SYNTAX_SUB_ITEM, self.abstract_syntax) + b"".join(
            encode_uid_item(TRANSFER_SYNTAX_SUB_ITEM, ts) for ts in self.transfer_syntaxes
        )
        fixed = bytes((self.context_id, 0, 0, 0))
        return encode_item(PRESENTATION_CONTEXT_ITEM_RQ, fixed + sub_items)

    @classmethod
    def decode(cls, value: memoryview) -> PresentationContextItemRQ:
        if len(value) < 4:
            raise PDUError("truncated presentation context item")
        abstract, syntaxes = None, []
        for sub_type, sub_value in split_items(value[4:]):
            if sub_type == ABSTRACT_SYNTAX_SUB_ITEM:
                abstract = decode_text(bytes(sub_value))
            elif sub_type == TRANSFER_SYNTAX_SUB_ITEM:
                syntaxes.append(decode_text(bytes(sub_value)))
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
        sub_item = encode_uid_item(TRANSFER_SYNTAX_SUB_ITEM, self.transfer_syntax)
        fixed = bytes((self.context_id, 0, self.result, 0))
        return encode_item(PRESENTATION_CONTEXT_ITEM_AC, fixed + sub_item)

    @classmethod
    def decode(cls, value: memoryview) -> PresentationContextItemAC:
        if len(value) < 4:
            raise PDUError("truncated presentation context item")
        syntaxes = [
            decode_text(bytes(v))
            for t, v in split_items(value[4:])
            if t == TRANSFER_SYNTAX_SUB_ITEM
        ]
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
        return encode_item(ROLE_SELECTION_SUB_ITEM, value)

    @classmethod
    def decode(cls, value: memoryview) -> RoleSelectionItem:
        if len(value) < 2:
            raise PDUError("truncated role selection item")
        (uid_length,) = struct.unpack_from(">H", value)
        if len(value) != 2 + uid_length + 2:
            raise PDUError("role selection item of inconsistent length")
        uid = decode_text(bytes(value[2 : 2 + uid_length]))
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
        sub_items = [encode_item(MAXIMUM_LENGTH_SUB_ITEM, struct.pack(">L", self.maximum_length))]
        sub_items.append(
            encode_uid_item(IMPLEMENTATION_CLASS_UID_SUB_ITEM, self.implementation_class_uid)
        )
        sub_items.extend(role.encode() for role in self.role_selection)
        if self.implementation_version_name:
            name = self.implementation_version_name.encode("ascii")
            sub_items.append(encode_item(IMPLEMENTATION_VERSION_NAME_SUB_ITEM, name))
        return encode_item(USER_INFORMATION_ITEM, b"".join(sub_items))

    @classmethod
    def decode(cls, value: memoryview) -> UserInformationItem:
        maximum_length, class_uid, version_name = 0, "", ""
        roles = []
        for sub_type, sub_value in split_items(value):
            if sub_type == MAXIMUM_LENGTH_SUB_ITEM:
                if len(sub_value) != 4:
                    raise PDUError("maximum length sub-item is not 4 bytes")
                (maximum_length,) = struct.unpack(">L", sub_value)
            elif sub_type == IMPLEMENTATION_CLASS_UID_SUB_ITEM:
                class_uid = decode_text(bytes(sub_value))
            elif sub_type == IMPLEMENTATION_VERSION_NAME_SUB_ITEM:
                version_name = decode_text(bytes(sub_value))
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
