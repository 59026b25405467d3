"""DIMSE messages (PS3.7): command sets in group 0000, and their carriage in P-DATA-TF PDUs.

Command sets are always Implicit VR Little Endian (PS3.7 §6.3.1), so they are encoded and
decoded by hand here: a C-STORE command costs a few microseconds instead of a pydicom
round-trip. A command set is a plain ``dict`` from element number (group 0000) to value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum

from stgcmt.ul.pdu import p_data_tf_header
from stgcmt.ul.pdu_items import (
    PDV_HEADER_LENGTH,
    PDUError,
    PresentationDataValueItem,
    message_control_header,
)

CommandSet = dict[int, int | str | bytes]

# Command set elements (PS3.7 Annex E); the key is the element number in group 0000.
COMMAND_GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS_UID = 0x0002
REQUESTED_SOP_CLASS_UID = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE_UID = 0x1000
REQUESTED_SOP_INSTANCE_UID = 0x1001
EVENT_TYPE_ID = 0x1002
ACTION_TYPE_ID = 0x1008

NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0001
"""Command Data Set Type: 0101H means none; any other value means one follows."""

_UL = {COMMAND_GROUP_LENGTH}
_US = {
    COMMAND_FIELD,
    MESSAGE_ID,
    MESSAGE_ID_BEING_RESPONDED_TO,
    PRIORITY,
    COMMAND_DATA_SET_TYPE,
    STATUS,
    EVENT_TYPE_ID,
    ACTION_TYPE_ID,
}
_UI = {
    AFFECTED_SOP_CLASS_UID,
    REQUESTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    REQUESTED_SOP_INSTANCE_UID,
}
_TEXT = _UI | {ERROR_COMMENT}

_ELEMENT_HEADER = struct.Struct("<HHL")
_US_VALUE = struct.Struct("<H")
_UL_VALUE = struct.Struct("<L")


class CommandField(IntEnum):
    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130


RESPONSE_BIT = 0x8000


def _encode_value(element: int, value: int | str | bytes) -> bytes | None:
    """The element's value field; None when ``value`` cannot be that element (e.g. a Message ID
    that arrived as 3 bytes and is echoed back): such an element is left out rather than fail
    the whole response, because the requester must always get one."""
    if element in _US or element in _UL:
        number = _US_VALUE if element in _US else _UL_VALUE
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * number.size):
            return None
        return number.pack(value)
    # text a peer sent us was decoded with U+FFFD for what was not ASCII: never raise on it
    raw = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    if len(raw) % 2:
        raw += b"\0" if element in _UI else b" "
    return raw


def encode_command_set(command: CommandSet) -> bytes:
    """Implicit VR Little Endian, elements in ascending order, Command Group Length first."""
    encoded = (
        (element, _encode_value(element, command[element]))
        for element in sorted(command)
        if element != COMMAND_GROUP_LENGTH
    )
    body = b"".join(
        _ELEMENT_HEADER.pack(0, element, len(raw)) + raw
        for element, raw in encoded
        if raw is not None
    )
    return _ELEMENT_HEADER.pack(0, COMMAND_GROUP_LENGTH, 4) + _UL_VALUE.pack(len(body)) + body


def _decode_value(element: int, raw: bytes) -> int | str | bytes:
    if element in _US and len(raw) == 2:
        return _US_VALUE.unpack(raw)[0]
    if element in _UL and len(raw) == 4:
        return _UL_VALUE.unpack(raw)[0]
    if element in _TEXT:
        return raw.decode("ascii", "replace").rstrip("\0 ")
    return raw


def decode_command_set(data: bytes) -> CommandSet:
    """Raises :class:`PDUError` for anything that is not a well-formed group 0000."""
    command: CommandSet = {}
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < _ELEMENT_HEADER.size:
            raise PDUError("truncated command set element")
        group, element, length = _ELEMENT_HEADER.unpack_from(data, offset)
        start = offset + _ELEMENT_HEADER.size
        offset = start + length
        if group != 0 or offset > size:
            raise PDUError(f"malformed command set element ({group:04X},{element:04X})")
        command[element] = _decode_value(element, data[start:offset])
    if not isinstance(command.get(COMMAND_FIELD), int):
        raise PDUError("command set without a (US) Command Field")
    return command


def has_data_set(command: CommandSet) -> bool:
    return command.get(COMMAND_DATA_SET_TYPE, NO_DATA_SET) != NO_DATA_SET


def is_response(command: CommandSet) -> bool:
    return bool(int(command[COMMAND_FIELD]) & RESPONSE_BIT)


def _message_id(request: CommandSet) -> int:
    """The request's Message ID, or 0 if it sent none that fits a US."""
    value = request.get(MESSAGE_ID, 0)
    return value if isinstance(value, int) and 0 <= value <= 0xFFFF else 0


def response_to(request: CommandSet, status: int, *, with_data_set: bool = False) -> CommandSet:
    """The response command set for ``request`` (PS3.7 §9.3 and §10.3): it echoes the SOP class
    and instance (Requested ones become Affected) and the event or action type."""
    response: CommandSet = {
        COMMAND_FIELD: int(request[COMMAND_FIELD]) | RESPONSE_BIT,
        MESSAGE_ID_BEING_RESPONDED_TO: _message_id(request),
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT if with_data_set else NO_DATA_SET,
        STATUS: status if 0 <= status <= 0xFFFF else 0x0110,  # a failure, still a status
    }
    for affected, requested in (
        (AFFECTED_SOP_CLASS_UID, REQUESTED_SOP_CLASS_UID),
        (AFFECTED_SOP_INSTANCE_UID, REQUESTED_SOP_INSTANCE_UID),
    ):
        uid = request.get(affected) or request.get(requested)
        if uid:
            response[affected] = uid
    for type_id in (EVENT_TYPE_ID, ACTION_TYPE_ID):
        if type_id in request:
            response[type_id] = request[type_id]
    return response


MAX_COMMAND_BYTES = 64 * 1024
"""Largest reassembled command set accepted: real ones are a few hundred bytes."""
DEFAULT_MAX_DATA_SET_BYTES = 1 << 30
"""Default cap on a data set reassembled in memory (see :class:`MessageAssembler`)."""
STREAM_PREFIX_BYTES = 64 * 1024
"""Bytes of a data set held before it may be streamed: what a C-STORE is checked and indexed
by lies within them; a data set complete within them is handled whole."""


@dataclass
class Message:
    """A complete DIMSE message as received: its command set and its data set, if any.
    ``oversized`` says the data set passed the assembler's cap and was discarded (then
    ``data_set`` is None and the request is answered with a failure, never handled).
    ``streamed`` says ``data_set`` holds only its first bytes: the rest follows as
    :class:`Fragment` s."""

    context_id: int
    command: CommandSet
    data_set: bytes | None = None
    oversized: bool = False
    streamed: bool = False

    @property
    def command_field(self) -> int:
        return int(self.command[COMMAND_FIELD])


@dataclass(slots=True)
class Fragment:
    """The next bytes of a streamed data set (a view on the received PDU), ``last`` or not."""

    data: bytes | memoryview
    last: bool


StreamDecision = Callable[[Message, bytes], bool]
"""Whether a message whose data set begins with these bytes is streamed (else held whole)."""


class MessageAssembler:
    """Reassembles messages from PDVs (PS3.8 Annex E). One message at a time per direction:
    PS3.7 does not interleave the fragments of different messages on an association.

    Memory is bounded whatever the peer sends: a command set past :data:`MAX_COMMAND_BYTES` is
    a protocol error (PDUError, so the association is aborted); a data set past
    ``max_data_set`` stops being buffered, the rest of its fragments are dropped and the
    message is delivered ``oversized``. A data set still arriving past ``stream_after`` bytes
    is offered to ``stream``: if it takes it, the message is delivered ``streamed`` with those
    first bytes, and every later fragment is handed on as a :class:`Fragment` at once, never
    buffered here (so ``max_data_set`` bounds only what is held)."""

    def __init__(
        self,
        max_data_set: int = DEFAULT_MAX_DATA_SET_BYTES,
        stream: StreamDecision | None = None,
        stream_after: int = STREAM_PREFIX_BYTES,
    ) -> None:
        self._max_data_set = max_data_set
        self._stream = stream
        self._stream_after = stream_after
        self._command: list[bytes | memoryview] = []
        self._command_size = 0
        self._data_set: list[bytes | memoryview] = []
        self._data_set_size = 0
        self._message: Message | None = None
        self._offered = False

    def feed(self, pdv: PresentationDataValueItem) -> Message | Fragment | None:
        """The message this PDV completes (or whose streaming it starts), the fragment of a
        streamed data set it carries, else None."""
        if pdv.is_command:
            return self._feed_command(pdv)
        message = self._message
        if message is None or pdv.context_id != message.context_id:
            raise PDUError("data set fragment without its command set")
        if message.streamed:
            if pdv.is_last:
                self.clear()
            return Fragment(pdv.data, pdv.is_last)
        self._data_set_size += len(pdv.data)
        if self._data_set_size > self._max_data_set:
            message.oversized = True
            self._data_set.clear()  # give the memory back now, keep counting
        elif not message.oversized:
            self._data_set.append(pdv.data)
        if not pdv.is_last:
            return self._offer(message)
        if not message.oversized:
            message.data_set = b"".join(self._data_set)
        self.clear()
        return message

    def _offer(self, message: Message) -> Message | None:
        """Offer a data set for streaming once, when its first ``stream_after`` bytes are in."""
        if (
            self._stream is None
            or self._offered
            or message.oversized
            or self._data_set_size < self._stream_after
        ):
            return None
        self._offered = True
        first = b"".join(self._data_set)
        if not self._stream(message, first):
            self._data_set = [first]
            return None
        message.streamed, message.data_set = True, first
        self._data_set, self._data_set_size = [], 0
        return message

    def _feed_command(self, pdv: PresentationDataValueItem) -> Message | None:
        if self._message is not None:
            raise PDUError("command set fragment inside a data set")
        self._command_size += len(pdv.data)
        if self._command_size > MAX_COMMAND_BYTES:
            raise PDUError(f"command set longer than {MAX_COMMAND_BYTES} bytes")
        self._command.append(pdv.data)
        if not pdv.is_last:
            return None
        message = Message(pdv.context_id, decode_command_set(b"".join(self._command)))
        self.clear()
        if has_data_set(message.command):
            self._message = message
            return None
        return message

    def clear(self) -> None:
        """Drop everything buffered (a message completed, or the association is over)."""
        self._command, self._command_size = [], 0
        self._data_set, self._data_set_size = [], 0
        self._message = None
        self._offered = False

    @property
    def receiving(self) -> Message | None:
        """The message whose data set is arriving, if any (to name it in logs)."""
        return self._message


def fragments(
    context_id: int, command: bytes, data_set: Iterable[bytes], max_pdu_length: int
) -> Iterator[bytes | memoryview]:
    """The bytes of the P-DATA-TF PDUs carrying a message, one PDV per PDU, each no longer than
    the peer's Maximum Length (0: unlimited). ``data_set`` yields its encoding in chunks of any
    size (e.g. file reads); data is sent as views, never copied."""
    room = max_pdu_length - PDV_HEADER_LENGTH if max_pdu_length else 1 << 31
    if room < 1:
        raise ValueError(f"maximum PDU length {max_pdu_length} leaves no room for data")
    chunks = iter(data_set)
    pending = next(chunks, None)
    yield from _fragment(context_id, memoryview(command), room, command=True, last=True)
    while pending is not None:
        chunk, pending = pending, next(chunks, None)
        last = pending is None
        yield from _fragment(context_id, memoryview(chunk), room, command=False, last=last)


def _fragment(
    context_id: int, data: memoryview, room: int, *, command: bool, last: bool
) -> Iterator[bytes | memoryview]:
    for start in range(0, max(len(data), 1), room):
        piece = data[start : start + room]
        final = last and start + room >= len(data)
        header = message_control_header(command=command, last=final)
        yield p_data_tf_header(context_id, header, len(piece))
        yield piece
