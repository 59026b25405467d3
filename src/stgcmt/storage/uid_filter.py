"""A Bloom filter over the SOP Instance UIDs of the index: the duplicate check of a new instance
(nearly every C-STORE) answered in a microsecond instead of an SQLite read (~60 µs, and GIL
hand-overs with the threads writing the database).

"Absent" is certain; "maybe" sends the lookup to the database, which decides. It is filled
from the database by a thread of its own at start-up (until then every lookup asks the
database) and by every row put afterwards. Removed rows stay "maybe" (a wasted lookup, never a
wrong answer). Past :data:`BITS_PER_UID` UIDs per bit the false "maybe"s grow, lookups slow down
towards what they cost without it; answers stay right.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

MIN_BITS = 1 << 25
"""4 MiB: 2 million UIDs at :data:`BITS_PER_UID` (a false "maybe" in ~0.3 % of lookups)."""
BITS_PER_UID = 16
_HASHES = 3


class UidFilter:
    """Call :meth:`fill` once (it starts the thread), :meth:`add` for every UID put."""

    def __init__(self, expected_uids: int) -> None:
        bits = MIN_BITS
        while bits < expected_uids * BITS_PER_UID:
            bits <<= 1
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)
        self._adding = threading.Lock()  # a byte's bits are set read-modify-write
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._filler: threading.Thread | None = None

    def fill(self, uids: Callable[[], Iterable[str]], name: str) -> None:
        """Add every UID ``uids()`` yields, in a thread; the filter answers only afterwards."""
        self._filler = threading.Thread(target=self._fill, args=(uids,), name=name, daemon=True)
        self._filler.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End the start-up fill and wait for its thread: the index closes the connection the
        fill reads through only after this (closing an SQLite connection while another thread
        iterates over it can crash the process)."""
        self._stop.set()
        if self._filler is not None:
            self._filler.join(timeout)

    def _fill(self, uids: Callable[[], Iterable[str]]) -> None:
        """A fill cut short (stopped, or the index failed) leaves the filter answering "maybe"."""
        try:
            for uid in uids():
                if self._stop.is_set():
                    return
                self.add(uid)
        except Exception as exc:
            log.warning("instance UIDs not all read (%s): every lookup asks the index", exc)
            return
        self._ready.set()

    def _positions(self, uid: str) -> Iterable[int]:
        digest = hash(uid)  # SipHash, cached on the str; the filter lives in this process only
        first, step = digest & 0xFFFFFFFF, (digest >> 32) | 1
        return (((first + i * step) & self._mask) for i in range(_HASHES))

    def add(self, uid: str) -> None:
        bits = self._bits
        with self._adding:
            for position in self._positions(uid):
                bits[position >> 3] |= 1 << (position & 7)

    def may_hold(self, uid: str) -> bool:
        """False only if ``uid`` was never added (and the filter is filled); True otherwise."""
        if not self._ready.is_set():
            return True
        bits = self._bits
        return all(bits[p >> 3] & (1 << (p & 7)) for p in self._positions(uid))

    def wait_filled(self, timeout: float) -> bool:
        """For tests and tools: whether the start-up fill is done."""
        return self._ready.wait(timeout)
