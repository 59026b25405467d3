"""The instance store: instance bytes in a :class:`~stgcmt.storage.interfaces.BlobStore`
(Part 10 files, :mod:`stgcmt.storage.files`) plus an
:class:`~stgcmt.storage.interfaces.InstanceIndex` (SQLite, :mod:`stgcmt.storage.sqlite_index`).

C-STORE writes a temp file and renames it into place, then indexes it with ``durable = 0``: no
fsync on the receive path. Commitment is the durability barrier: :meth:`InstanceStore.verify`
fsyncs files and directories in a batch and marks rows durable with a synchronous commit before
anything is reported committed. After a crash, :meth:`InstanceStore.recover` re-checks every
non-durable row against its SHA-256 and drops rows whose file did not survive intact, so the
index never claims a file it does not have.

A failed sync is not forgotten ("fsyncgate"): Linux may mark the pages whose write-back failed
clean and drop them, so a later sync that succeeds proves nothing about them. Every copy this
node received before a sync failed and that was not durable yet is marked *unsafe* in the index
(kept across restarts): never marked durable, its commitment fails (0110H) until the instance
is sent again, whose new copy replaces it.

Nothing a peer sends names a file: an instance's file is named by the SHA-256 of its UID, every
UID is checked per PS3.5 9.1 before anything else happens, and every name read back from the
index must lie inside the blob store (a row pointing elsewhere is treated as missing, never
opened). This module keeps those checks and the barrier; the parts are swappable.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import TypeVar

from stgcmt.config import Durability, VerifyPolicy
from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.part10 import MalformedDataset, file_meta, scanned_attributes
from stgcmt.dicom.status import (
    CANNOT_UNDERSTAND,
    CLASS_INSTANCE_CONFLICT,
    DATASET_DOES_NOT_MATCH,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
    SOP_CLASS_NOT_SUPPORTED,
)
from stgcmt.dicom.uids import is_valid_uid
from stgcmt.faults import crash_point
from stgcmt.storage.files import FileBlobStore, sha256_of
from stgcmt.storage.fsync import fsync_created, missing_directories
from stgcmt.storage.interfaces import BlobStore, IndexedInstance, InstanceIndex, InstanceRow
from stgcmt.storage.sqlite import ensure_writable_dir
from stgcmt.storage.sqlite_index import SqliteInstanceIndex

__all__ = [
    "DurabilityBarrier",
    "IncomingInstance",
    "InstanceStore",
    "StoreOutcome",
    "StoreRefused",
    "is_out_of_space",
    "sha256_of",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

ROUND_INTERVAL = 0.25
"""Seconds between background durability rounds: short enough that a commitment sent right
after its C-STOREs finds most of them durable, long enough that a round syncs many at once."""
ROUND_ROWS = 20_000
"""Rows one round takes at most (memory stays bounded; the next round takes the rest)."""
BARRIER_ROWS = 20_000
"""References a commitment keeps waiting for its barrier before it passes one (memory bound
for a huge commitment; with the rounds, rarely reached)."""
QUOTA_REFRESH = 1.0
"""Seconds between reads of the archive's total from an index other nodes share: the quota is
the cluster's, and each node may overshoot it by what the others stored within one interval."""
BARRIER_ATTEMPTS = 3
"""Barriers for an instance replaced again and again while being made durable before it is
reported failed (0110H)."""


@dataclass(frozen=True)
class StoreOutcome:
    """What a C-STORE did: ``stored``, ``duplicate`` (first copy kept), ``replaced`` or
    ``conflict`` (same instance UID already held under another SOP Class); ``blob`` names the
    copy now held."""

    action: str
    blob: str


class StoreRefused(ValueError):
    """A C-STORE refused before anything was written; ``status`` is the C-STORE status to
    answer (0xA900, 0x0122 or 0xC000)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def shown(uid: object, limit: int = 80) -> str:
    """A peer-supplied value for a log line: repr (no control characters reach the log),
    truncated (a hostile value cannot flood it)."""
    text = repr(uid)
    return text if len(text) <= limit else f"{text[:limit]}…"


class InstanceStore:
    """The C-STORE identity checks, the quota and the commitment barrier over an index and a
    blob store: by default ``<data_dir>/index.sqlite`` and files under ``<data_dir>/instances``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        supported_classes: frozenset[str],
        overwrite_duplicates: bool = False,
        max_bytes: int = 0,
        index: InstanceIndex | None = None,
        blobs: BlobStore | None = None,
        durability: Durability = "auto",
    ) -> None:
        self.data_dir = Path(data_dir)
        created = missing_directories(self.data_dir)
        ensure_writable_dir(self.data_dir, "data dir")
        fsync_created(created)
        self.index: InstanceIndex = (
            index if index is not None else SqliteInstanceIndex(self.data_dir / "index.sqlite")
        )
        self.blobs: BlobStore = (
            blobs
            if blobs is not None
            else FileBlobStore(self.data_dir, durability, self.index.node)
        )
        self._reported_outside: set[str] = set()
        self.supported_classes = supported_classes
        self.overwrite_duplicates = overwrite_duplicates
        self.max_bytes = max_bytes
        # Instances refused for lack of space since start: their commitment fails with 0213H
        # (resource limitation) rather than 0112H, which tells the sender to try again later.
        self._refused_for_space: set[str] = set()
        self._bytes = self.index.total_bytes()
        self._bytes_read_at = time.monotonic()
        self._rounds: threading.Thread | None = None
        self._stop_rounds = threading.Event()
        self._round_failures: set[tuple[str, str, float]] = set()
        self.sync_failed_at: float | None = None
        """When a sync of the store last failed (epoch seconds), None if never since start."""
        self._unsafe_unrecorded: list[tuple[list[IndexedInstance], float]] = []
        """Failed syncs whose unsafe copies the index could not record yet (retried first)."""
        self._recording_unsafe = threading.Lock()

    @property
    def root(self) -> Path:
        """The file store's directory (file blob store only: tests and tools)."""
        assert isinstance(self.blobs, FileBlobStore)
        return self.blobs.root

    def path_for(self, sop_instance_uid: str) -> Path:
        """Where a new instance's file goes (file blob store only: tests and tools)."""
        assert isinstance(self.blobs, FileBlobStore)
        return self.blobs.path_for(sop_instance_uid)

    # -- receiving ---------------------------------------------------------------------------

    def checked_identity(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        abstract_syntax: str | None,
    ) -> tuple[str | None, ...]:
        """The index attributes of a C-STORE whose identity holds together, else raises
        :class:`StoreRefused`. Cheapest checks first; none of them touches the disk."""
        for name, uid in (("Class", sop_class_uid), ("Instance", sop_instance_uid)):
            if not is_valid_uid(uid):
                raise StoreRefused(
                    CANNOT_UNDERSTAND, f"Affected SOP {name} UID {shown(uid)} is not a valid UID"
                )
        if abstract_syntax is not None and sop_class_uid != abstract_syntax:
            raise StoreRefused(
                DATASET_DOES_NOT_MATCH,
                f"Affected SOP Class UID {shown(sop_class_uid)} sent on a presentation context"
                f" for {shown(abstract_syntax)}",
            )
        if sop_class_uid not in self.supported_classes:
            raise StoreRefused(
                SOP_CLASS_NOT_SUPPORTED,
                f"SOP Class {shown(sop_class_uid)} is not a Storage SOP Class we accept",
            )
        try:
            ds_class, ds_instance, *attributes = scanned_attributes(dataset, transfer_syntax)
        except MalformedDataset as exc:
            raise StoreRefused(CANNOT_UNDERSTAND, str(exc)) from exc
        for name, value, expected in (
            ("Class", ds_class, sop_class_uid),
            ("Instance", ds_instance, sop_instance_uid),
        ):
            if value == expected:
                continue  # as valid as the command's, checked above
            if value is None or not is_valid_uid(value):
                raise StoreRefused(
                    CANNOT_UNDERSTAND,
                    f"data set SOP {name} UID {shown(value)} is missing or not a valid UID",
                )
            raise StoreRefused(
                DATASET_DOES_NOT_MATCH,
                f"data set SOP {name} UID {shown(value)} differs from the command's",
            )
        return tuple(attributes)

    def store(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        dataset: bytes,
        source_aet: str,
        *,
        abstract_syntax: str | None = None,
    ) -> StoreOutcome:
        """Write one received instance, held whole, and index it (see :meth:`receive`)."""
        receiving = self.receive(
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax,
            dataset,
            source_aet,
            abstract_syntax=abstract_syntax,
        )
        return receiving if isinstance(receiving, StoreOutcome) else receiving.finish()

    def receive(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        prefix: bytes,
        source_aet: str,
        *,
        abstract_syntax: str | None = None,
    ) -> IncomingInstance | StoreOutcome:
        """Start receiving an instance whose data set begins with ``prefix`` (all of it, or
        enough to hold the attributes the index needs): the :class:`IncomingInstance` the rest
        is written to, or the outcome already decided (a duplicate or a SOP Class conflict:
        the rest is not needed). Raises :class:`StoreRefused` (with the status) for a C-STORE
        whose UIDs are invalid or do not match each other, the data set or the presentation
        context's ``abstract_syntax`` (not checked when None), and ``OSError`` for storage
        failures (the caller maps it to a C-STORE status)."""
        attributes = self.checked_identity(
            sop_class_uid, sop_instance_uid, transfer_syntax, prefix, abstract_syntax
        )
        existing = self._lookup([sop_instance_uid]).get(sop_instance_uid)
        if existing is not None and existing.sop_class_uid != sop_class_uid:
            self.index.record_conflict(sop_instance_uid, sop_class_uid, source_aet)
            return StoreOutcome("conflict", existing.blob)
        if existing is not None and not self.overwrite_duplicates and not existing.unsafe:
            return StoreOutcome("duplicate", existing.blob)
        if existing is not None and existing.unsafe:
            log.info("instance %s sent again: replaces its unsafe copy", shown(sop_instance_uid))
        study, series, patient = attributes
        row = InstanceRow(
            sop_instance_uid,
            sop_class_uid,
            study,
            series,
            patient,
            transfer_syntax,
            self.blobs.name_for(sop_instance_uid),
            0,
            "",
            source_aet,
            0.0,
        )
        incoming = IncomingInstance(self, row, existing)
        incoming.write(file_meta(sop_class_uid, sop_instance_uid, transfer_syntax), prefix)
        return incoming

    def _received(
        self, row: InstanceRow, existing: IndexedInstance | None, started: float
    ) -> StoreOutcome:
        """An instance's file is under its name: index it, account for it. One whose writing
        ``started`` before a sync failed is unsafe (the failure may concern its first pages);
        checked after the put, so that either this check or the failed sync's marking sees
        the row."""
        crash_point("scp.store.after_rename")
        self.index.put(row)
        if self.sync_failed_at is not None and started <= self.sync_failed_at:
            self.index.mark_unsafe([IndexedInstance.of(row)], self.sync_failed_at)
        self._refused_for_space.discard(row.sop_instance_uid)
        if existing is not None and self.blobs.locate(existing.blob) != self.blobs.locate(row.blob):
            self.blobs.remove(existing.blob)  # a replaced copy under its pre-hash name
        self._bytes += row.size - (existing.size if existing else 0)
        return StoreOutcome("replaced" if existing else "stored", row.blob)

    def _failed(self, sop_instance_uid: str, exc: OSError) -> None:
        """A store failed: if for lack of space, its commitment will say 0213H."""
        if is_out_of_space(exc):
            self._refused_for_space.add(sop_instance_uid)

    def _check_quota(self, size: int) -> None:
        if not self.max_bytes:
            return
        self._refresh_total()
        if self._bytes + size > self.max_bytes:
            raise OSError(
                errno.ENOSPC, f"store quota of {self.max_bytes} bytes reached ({self._bytes} used)"
            )

    def _refresh_total(self) -> None:
        """On an index other nodes share, what they stored counts against the quota too: the
        archive's total is read again at most every :data:`QUOTA_REFRESH` seconds (between
        reads, this node adds what it stores itself). An index of our own is never re-read."""
        if self.index.node is None or time.monotonic() - self._bytes_read_at < QUOTA_REFRESH:
            return
        self._bytes_read_at = time.monotonic()
        self._bytes = self.index.total_bytes()

    # -- looking up ----------------------------------------------------------------------------

    def _lookup(self, uids: Sequence[str]) -> dict[str, IndexedInstance]:
        """Index rows whose blob lies inside the store; the others are treated as missing."""
        found = self.index.lookup(uids)
        for uid in [uid for uid, row in found.items() if not self._inside_store(row)]:
            del found[uid]
        return found

    def _inside_store(self, row: IndexedInstance) -> bool:
        """Whether an index row's blob is inside the store; if not (logged once per instance)
        it is treated as missing, its name never opened."""
        if self.blobs.contains(row.blob):
            return True
        if row.sop_instance_uid not in self._reported_outside:
            self._reported_outside.add(row.sop_instance_uid)
            log.error(
                "index row for instance %s points outside the store (%s): treated as missing",
                shown(row.sop_instance_uid),
                shown(row.blob),
            )
        return False

    def count(self) -> int:
        return self.index.count()

    # -- the commitment barrier ----------------------------------------------------------------

    def barrier(self, policy: VerifyPolicy) -> DurabilityBarrier:
        """A barrier for one commitment: check its references batch by batch, then make all
        that pass durable at once."""
        return DurabilityBarrier(self, policy)

    def verify(self, refs: Sequence[Reference], policy: VerifyPolicy) -> list[int]:
        """Failure Reason per reference (0 = committed) with a barrier of their own."""
        barrier = self.barrier(policy)
        reasons = barrier.check(refs)
        outcome = barrier.commit()
        return [
            outcome[ref.sop_instance_uid] if reason is None else reason
            for ref, reason in zip(refs, reasons, strict=True)
        ]

    def _check(self, ref: Reference, row: IndexedInstance | None, policy: VerifyPolicy) -> int:
        if ref.sop_class_uid not in self.supported_classes:
            return SOP_CLASS_NOT_SUPPORTED
        if row is None:
            if ref.sop_instance_uid in self._refused_for_space:
                return RESOURCE_LIMITATION
            return NO_SUCH_OBJECT_INSTANCE
        if row.sop_class_uid != ref.sop_class_uid:
            return CLASS_INSTANCE_CONFLICT
        if row.unsafe:
            log.error(
                "instance %s cannot be committed: a sync failed before its copy was durable,"
                " so its bytes may not be on disk; the instance must be sent again (C-STORE),"
                " then committed",
                shown(ref.sop_instance_uid),
            )
            return PROCESSING_FAILURE
        problem = self.blob_problem(row, policy)
        if problem:
            log.error("instance %s fails verification: %s", ref.sop_instance_uid, problem)
            return PROCESSING_FAILURE
        return 0

    def _make_durable(
        self, rows: Sequence[IndexedInstance], policy: VerifyPolicy, after_sync: Callable[[], None]
    ) -> set[str]:
        """One sync of all the blobs (syncfs, or the files then their directories), then the
        rows marked durable with one synchronous commit; returns the UIDs marked (a row whose
        copy was replaced after the sync is not). Raises OSError if stable storage failed."""
        self._record_unsafe()
        try:
            self.blobs.sync([row.blob for row in rows])
        except OSError as exc:
            self._sync_failed(rows, exc)
            raise
        after_sync()
        return self.index.mark_durable(rows, read_back=policy == "checksum")

    def _sync_failed(self, rows: Sequence[IndexedInstance], exc: OSError) -> None:
        """A sync failed: the copies it covered and every non-durable copy received until now
        are unsafe. If the index cannot record that now, it is retried before the next sync
        (which then fails too rather than commit them)."""
        self.sync_failed_at = time.time()
        self._unsafe_unrecorded.append((list(rows), self.sync_failed_at))
        log.error(
            "sync of the store failed (%s): the copies received before it that were not yet"
            " durable may have lost their bytes; their commitments fail (0110H) until the"
            " instances are sent again",
            exc,
        )
        with contextlib.suppress(OSError):  # logged by _record_unsafe; the barrier fails
            self._record_unsafe()

    def _record_unsafe(self) -> None:
        """Record in the index the unsafe copies of failed syncs not recorded yet (one thread at
        a time: the round's and a barrier's syncs may both have failed)."""
        with self._recording_unsafe:
            while self._unsafe_unrecorded:
                rows, failed_at = self._unsafe_unrecorded[0]
                try:
                    marked = self.index.mark_unsafe(rows, failed_at)
                except OSError as exc:
                    log.error(
                        "cannot record unsafe copies in the index (%s): no sync until it can", exc
                    )
                    raise
                self._unsafe_unrecorded.pop(0)
                log.error("%d copies marked unsafe: they must be sent again", marked)

    def blob_problem(self, row: IndexedInstance, policy: VerifyPolicy) -> str | None:
        """Why the blob behind an index row (inside the store) is not what the index says.
        ``checksum`` reads the bytes back unless this copy was read back when it was made
        durable (the read may come from the page cache: it proves what the file system
        returns, not what the platter holds)."""
        try:
            size = self.blobs.size(row.blob)
        except OSError as exc:
            return f"file {self.blobs.locate(row.blob)} unreadable: {exc.strerror}"
        if policy in ("size", "checksum") and size != row.size:
            return f"file {self.blobs.locate(row.blob)} has {size} bytes, index says {row.size}"
        if policy == "checksum" and not row.read_back:
            try:
                digest = self.blobs.sha256(row.blob)
            except OSError as exc:  # found but not readable: a failure, never a stuck verification
                return f"file {self.blobs.locate(row.blob)} unreadable: {exc.strerror}"
            if digest != row.sha256:
                return (
                    f"file {self.blobs.locate(row.blob)} SHA-256 {digest[:12]}…"
                    f" differs from index {row.sha256[:12]}…"
                )
        return None

    # -- the background durability round -------------------------------------------------------

    def start_durability_rounds(self, policy: VerifyPolicy) -> None:
        """Every :data:`ROUND_INTERVAL` seconds make what was stored since durable (checked by
        ``policy``), so that a commitment finds most of its instances durable already and its
        barrier has only the last ones left. Stopped by :meth:`close`."""
        self._rounds = threading.Thread(
            target=self._run_rounds, args=(policy,), name="stgcmt-durability", daemon=True
        )
        self._rounds.start()

    def _run_rounds(self, policy: VerifyPolicy) -> None:
        while not self._stop_rounds.wait(ROUND_INTERVAL):
            try:
                self.durability_round(policy)
            except OSError as exc:  # the commitment barrier reports it: 0110H / 0213H
                log.error("durability round failed (%s): retrying in %.2f s", exc, ROUND_INTERVAL)
            except Exception:
                log.exception("durability round failed: retrying in %.2f s", ROUND_INTERVAL)

    def durability_round(self, policy: VerifyPolicy) -> int:
        """One round over at most :data:`ROUND_ROWS` non-durable rows: those that pass
        ``policy`` are synced and marked durable. Returns how many were marked. A sync that
        fails marks them unsafe (their commitments fail, see :meth:`_sync_failed`)."""
        rows = list(islice(self._round_candidates(policy), ROUND_ROWS))
        if not rows:
            return 0
        marked = self._make_durable(rows, policy, lambda: crash_point("scp.durability.after_sync"))
        log.debug("durability round: %d instances made durable", len(marked))
        return len(marked)

    def _round_candidates(self, policy: VerifyPolicy) -> Iterator[IndexedInstance]:
        """Non-durable rows that pass ``policy``. A copy that fails is remembered and not read
        again by later rounds (a commitment still checks it and reports it failed)."""
        for row in self.index.non_durable():
            key = (row.sop_instance_uid, row.sha256, row.received_at)
            if key in self._round_failures:
                continue
            if self._inside_store(row) and self.blob_problem(row, policy) is None:
                yield row
            elif len(self._round_failures) < ROUND_ROWS:
                self._round_failures.add(key)

    # -- after a crash -------------------------------------------------------------------------

    def recover(self) -> int:
        """Drop index rows whose file did not survive a crash intact; clear temp files.
        Returns how many rows were dropped."""
        self.blobs.recover()
        dropped = 0
        for row in self.index.non_durable():
            if not self._inside_store(row):
                problem: str | None = "it points outside the store"
            else:
                problem = self.blob_problem(row, "checksum")
            if problem:
                log.warning(
                    "instance %s did not survive a restart intact (%s): removed from the index",
                    shown(row.sop_instance_uid),
                    problem,
                )
                self.index.remove(row.sop_instance_uid)
                dropped += 1
        return dropped

    def close(self) -> None:
        """Stop the durability rounds, then close the index and the blob store."""
        self._stop_rounds.set()
        if self._rounds is not None:
            self._rounds.join(timeout=30)
        self.index.close()
        self.blobs.close()


class IncomingInstance:
    """One instance being received: its bytes go to a blob writer as they arrive (hashed on the
    way, counted against the quota), :meth:`finish` names the file and indexes it,
    :meth:`discard` (an aborted C-STORE) leaves no file and no row. Any ``OSError`` discards
    it too."""

    def __init__(
        self, store: InstanceStore, row: InstanceRow, existing: IndexedInstance | None
    ) -> None:
        self._store = store
        self._row = row
        self._existing = existing
        self._digest = hashlib.sha256()
        self._size = 0
        self._started = time.time()
        self._writer = self._guarded(lambda: store.blobs.create(row.blob))

    def write(self, *pieces: bytes | memoryview) -> None:
        """Append the next bytes of the file (the quota is a cap on each instance too)."""
        self._size += sum(len(piece) for piece in pieces)
        self._guarded(lambda: self._store._check_quota(self._size))
        for piece in pieces:
            self._digest.update(piece)
        self._guarded(lambda: self._writer.write(pieces))

    def finish(self) -> StoreOutcome:
        """The whole data set has arrived: put the file under its name and index it."""
        self._guarded(self._writer.commit)
        row = replace(
            self._row, size=self._size, sha256=self._digest.hexdigest(), received_at=time.time()
        )
        return self._guarded(lambda: self._store._received(row, self._existing, self._started))

    def discard(self) -> None:
        self._writer.discard()

    def _guarded(self, step: Callable[[], T]) -> T:
        try:
            return step()
        except OSError as exc:
            if hasattr(self, "_writer"):
                self._writer.discard()
            self._store._failed(self._row.sop_instance_uid, exc)
            raise


def is_out_of_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class DurabilityBarrier:
    """The barrier of one commitment: :meth:`check` decides each reference by ``policy``
    (batch by batch, as they are read from the journal) and keeps those that pass but are not
    yet durable; :meth:`commit` then makes them all durable with one sync and one synchronous
    commit — never one fsync after another."""

    def __init__(self, store: InstanceStore, policy: VerifyPolicy) -> None:
        self._store = store
        self._policy = policy
        self._waiting: dict[str, tuple[Reference, IndexedInstance]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def check(self, refs: Sequence[Reference]) -> list[int | None]:
        """Failure Reason per reference, 0 for one durable already, None for one that waits
        for :meth:`commit`. Index rows still pending in a writer are written first: a crash
        from here on leaves them in the index for the restarted verification."""
        self._store.index.flush()
        rows = self._store._lookup([r.sop_instance_uid for r in refs])
        reasons: list[int | None] = []
        for ref in refs:
            row = rows.get(ref.sop_instance_uid)
            reason = self._store._check(ref, row, self._policy)
            if reason == 0 and row is not None and not self._durable(row):
                self._waiting[ref.sop_instance_uid] = (ref, row)
                reasons.append(None)
            else:
                reasons.append(reason)
        return reasons

    def _durable(self, row: IndexedInstance) -> bool:
        """Durable as this policy needs it: under ``checksum`` also read back once."""
        return row.durable and (row.read_back or self._policy != "checksum")

    def commit(self) -> dict[str, int]:
        """Failure Reason per waiting UID: 0 once synced and marked durable, 0110H / 0213H if
        stable storage failed. A copy replaced after the sync (``--overwrite-duplicates``) is
        checked again and needs a sync of its own."""
        outcome: dict[str, int] = {}
        for _ in range(BARRIER_ATTEMPTS):
            waiting, self._waiting = self._waiting, {}
            if not waiting:
                return outcome
            marked, failure = self._pass(waiting)
            outcome.update((uid, failure) for uid in waiting if failure or uid in marked)
            replaced = [ref for uid, (ref, _) in waiting.items() if uid not in outcome]
            outcome.update(
                (ref.sop_instance_uid, reason)
                for ref, reason in zip(replaced, self.check(replaced), strict=True)
                if reason is not None
            )
        for uid in self._waiting:
            log.error("instance %s replaced during every barrier: reported failed", shown(uid))
            outcome[uid] = PROCESSING_FAILURE
        self._waiting = {}
        return outcome

    def _pass(self, waiting: dict[str, tuple[Reference, IndexedInstance]]) -> tuple[set[str], int]:
        """(UIDs marked, 0) or (nothing, the Failure Reason of a failed sync or commit)."""
        rows = [row for _, row in waiting.values()]
        try:
            marked = self._store._make_durable(
                rows, self._policy, lambda: crash_point("scp.barrier.after_fsync")
            )
        except OSError as exc:
            log.error("cannot make %d instances durable: %s", len(rows), exc)
            return set(), RESOURCE_LIMITATION if is_out_of_space(exc) else PROCESSING_FAILURE
        return marked, 0
