"""Cutting a byte stream into PDUs, each header checked before its body is buffered, and the
caps on how long a PDU of each type may be."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from stgcmt.ul.pdu import PDU_HEADER, PDU_HEADER_LENGTH

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
                pdu_type, length = PDU_HEADER.unpack_from(buffer, offset)
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
