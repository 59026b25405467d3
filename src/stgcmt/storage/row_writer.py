"""Index rows accepted at once and written in batches by one thread (the C-STORE hot path).

An INSERT with its own commit costs ~22 µs and 15 syscalls per instance and, worse, holds the
database lock the receiving thread then waits on. :class:`RowWriter` takes a row in a few
microseconds, makes it visible at once (:meth:`RowWriter.pending`: lookups, duplicate checks and
commitment verification see it before it is written) and lets one writer thread insert up to
:data:`BATCH_ROWS` rows per transaction. :meth:`RowWriter.flush` writes everything accepted so
far before it returns: the durability barrier calls it, so a row is always in the database
before it is marked durable.

What a crash loses: rows accepted but not yet written. Their instances were answered Success
but never committed (a commitment flushes first), so the sender still holds them; their files
are left without a row (recovery ignores them, a new C-STORE replaces them).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Sequence

from stgcmt.storage.interfaces import InstanceRow

log = logging.getLogger(__name__)

BATCH_ROWS = 64
"""Rows per transaction at most."""
BATCH_LINGER = 0.05
"""Seconds the writer waits for a batch to fill once a row is pending: long enough to gather
the rows of a burst of small C-STOREs (each wake-up of this thread costs the receiving thread
GIL hand-overs), short enough that other readers of the database (``stgcmt status``) see a
row soon. A commitment never waits for it: pending rows are visible, and flushed first."""
MAX_PENDING_ROWS = 20_000
"""Rows accepted but not yet written before new ones are refused (the index is slower than
the network, or failing): memory stays bounded and the sender is told (0xA700)."""
RETRY_AFTER = 0.5
"""Seconds between attempts while writing fails (disk full): rows stay pending meanwhile."""


class RowWriter:
    """Pending rows by SOP Instance UID, written by ``write`` (one transaction per call) in a
    thread of its own."""

    def __init__(self, write: Callable[[Sequence[InstanceRow]], None], name: str) -> None:
        self._write = write
        self._pending: dict[str, InstanceRow] = {}
        self._queue: list[InstanceRow] = []
        self._changed = threading.Condition(threading.Lock())
        self._writing = threading.Lock()
        """Held from taking a batch until it is committed: :meth:`flush` waits for it."""
        self._failure: OSError | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, row: InstanceRow) -> None:
        """Accept a row (visible at once); OSError while the writer cannot write (the last
        batch failed) or is too far behind, so that no more instances are accepted than the
        index can hold."""
        with self._changed:
            self._refuse_if_failing()
            self._pending[row.sop_instance_uid] = row
            self._queue.append(row)
            if len(self._queue) in (1, BATCH_ROWS):
                self._changed.notify()

    def _refuse_if_failing(self) -> None:
        if self._failure is not None:
            failure = self._failure
            raise OSError(failure.errno, f"index cannot be written ({failure.strerror})")
        if len(self._queue) >= MAX_PENDING_ROWS:
            raise OSError(errno.EAGAIN, f"{len(self._queue)} index rows wait to be written")

    def pending(self, sop_instance_uid: str) -> InstanceRow | None:
        """The newest row accepted for this UID and not yet written, if any."""
        return self._pending.get(sop_instance_uid)

    def drop(self, sop_instance_uid: str) -> None:
        """Forget a pending row (its instance is being removed from the index)."""
        with self._writing, self._changed:
            self._pending.pop(sop_instance_uid, None)
            self._queue = [row for row in self._queue if row.sop_instance_uid != sop_instance_uid]

    def flush(self) -> None:
        """Write every row accepted before this call; raises the OSError that stops it."""
        with self._writing:
            while self._write_batch():
                pass

    def _write_batch(self) -> bool:
        """One transaction of up to BATCH_ROWS rows (``_writing`` held); False if none was
        pending. On failure the rows stay pending, in order, and the failure is raised as
        OSError (a bug or MemoryError as EIO: the rows are never dropped, the thread goes on)."""
        with self._changed:
            batch, self._queue = self._queue[:BATCH_ROWS], self._queue[BATCH_ROWS:]
        if not batch:
            return False
        try:
            self._write(batch)
        except Exception as exc:  # whatever it was, the batch is written again later
            failure = exc if isinstance(exc, OSError) else OSError(errno.EIO, repr(exc))
            with self._changed:
                self._queue[:0] = batch
                self._failure = failure
            raise failure from exc
        with self._changed:
            self._failure = None
            for row in batch:
                if self._pending.get(row.sop_instance_uid) is row:
                    del self._pending[row.sop_instance_uid]
        return True

    def _run(self) -> None:
        while self._wait_for_rows():
            try:
                self.flush()
            except OSError as exc:
                log.error("index rows not written (%s): retrying in %.1f s", exc, RETRY_AFTER)
                with self._changed:
                    self._changed.wait_for(lambda: self._closing, timeout=RETRY_AFTER)

    def _wait_for_rows(self) -> bool:
        """Until rows are pending (then a moment for the batch to fill); False once closing."""
        with self._changed:
            self._changed.wait_for(lambda: self._queue or self._closing)
            if self._closing:
                return False
            self._changed.wait_for(
                lambda: len(self._queue) >= BATCH_ROWS or self._closing, timeout=BATCH_LINGER
            )
        return True

    def close(self) -> None:
        """Stop the thread, then write what is still pending (raises if that fails)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout=30)
        self.flush()
