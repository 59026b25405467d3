"""The instance store: Part 10 files on disk plus an SQLite index (``index.sqlite``).

C-STORE writes a temp file and renames it into place, then indexes it with ``durable = 0``: no
fsync on the receive path. Commitment is the durability barrier: :meth:`InstanceStore.verify`
fsyncs files and directories in a batch and marks rows durable with a synchronous commit before
anything is reported committed. After a crash, :meth:`InstanceStore.recover` re-checks every
non-durable row against its SHA-256 and drops rows whose file did not survive intact, so the
index never claims a file it does not have.

Nothing a peer sends names a file: an instance's file is named by the SHA-256 of its UID, every
UID is checked per PS3.5 9.1 before anything else happens, and every path read back from the
index must lie under the store (a row pointing elsewhere is treated as missing, never opened).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stgcmt.dicom.commitment import Reference, chunked
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
from stgcmt.storage.sqlite import Database, ensure_writable_dir

log = logging.getLogger(__name__)

LOOKUP_BATCH = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT,
    series_instance_uid TEXT,
    patient_id TEXT,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source_aet TEXT,
    received_at REAL NOT NULL,
    durable INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_not_durable ON instances (durable) WHERE durable = 0;
CREATE TABLE IF NOT EXISTS class_conflicts (
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    source_aet TEXT,
    received_at REAL NOT NULL,
    PRIMARY KEY (sop_instance_uid, sop_class_uid)
)
"""


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    size: int
    sha256: str
    durable: bool


@dataclass(frozen=True)
class StoreOutcome:
    """What a C-STORE did: ``stored``, ``duplicate`` (first copy kept), ``replaced`` or
    ``conflict`` (same instance UID already held under another SOP Class)."""

    action: str
    path: Path


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
    """Files under ``<data_dir>/instances`` fanned out by hash, index in ``index.sqlite``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        supported_classes: frozenset[str],
        overwrite_duplicates: bool = False,
        max_bytes: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "instances"
        ensure_writable_dir(self.data_dir, "data dir")
        ensure_writable_dir(self.root, "instances directory")
        self._real_root = os.path.realpath(self.root)
        self._real_directories: dict[Path, bool] = {}
        self._reported_outside: set[str] = set()
        self._directories: set[Path] = set()
        self.supported_classes = supported_classes
        self.overwrite_duplicates = overwrite_duplicates
        self.db = Database(self.data_dir / "index.sqlite", SCHEMA)
        self.max_bytes = max_bytes
        # Instances refused for lack of space since start: their commitment fails with 0213H
        # (resource limitation) rather than 0112H, which tells the sender to try again later.
        self._refused_for_space: set[str] = set()
        self._bytes = int(self.db.query("SELECT coalesce(sum(size), 0) FROM instances")[0][0])

    # -- receiving ---------------------------------------------------------------------------

    def path_for(self, sop_instance_uid: str) -> Path:
        """Where a new instance's file goes: named by the SHA-256 of its UID, never by the UID
        itself (a peer's UID must not choose a path). Fanned out into 256 directories: one
        huge directory gets slow to create files in, while a deeper tree costs a directory
        creation (and its fsync) per early file. Rows written before keep their own path."""
        digest = hashlib.sha256(sop_instance_uid.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.dcm"

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
        """Write one received instance and index it. Raises :class:`StoreRefused` (with the
        status) for a C-STORE whose UIDs are invalid or do not match each other, the data set
        or the presentation context's ``abstract_syntax`` (not checked when None), and
        ``OSError`` for storage failures (the caller maps it to a C-STORE status)."""
        attributes = self.checked_identity(
            sop_class_uid, sop_instance_uid, transfer_syntax, dataset, abstract_syntax
        )
        existing = self._lookup([sop_instance_uid]).get(sop_instance_uid)
        if existing is not None and existing.sop_class_uid != sop_class_uid:
            self._record_conflict(sop_instance_uid, sop_class_uid, source_aet)
            return StoreOutcome("conflict", existing.path)
        if existing is not None and not self.overwrite_duplicates:
            return StoreOutcome("duplicate", existing.path)

        content = file_meta(sop_class_uid, sop_instance_uid, transfer_syntax) + dataset
        try:
            self._check_quota(len(content))
            final = self.path_for(sop_instance_uid)
            self._write_atomically(final, content)
            crash_point("scp.store.after_rename")
            self._index(
                sop_instance_uid,
                sop_class_uid,
                attributes,
                transfer_syntax,
                final,
                content,
                source_aet,
            )
        except sqlite3.Error as exc:
            full = "full" in str(exc)
            if full:
                self._refused_for_space.add(sop_instance_uid)
            raise OSError(errno.ENOSPC if full else errno.EIO, f"index: {exc}") from exc
        except OSError as exc:
            if is_out_of_space(exc):
                self._refused_for_space.add(sop_instance_uid)
            raise
        self._refused_for_space.discard(sop_instance_uid)
        if existing is not None and existing.path != final:
            existing.path.unlink(missing_ok=True)  # a replaced copy under its pre-hash name
        self._bytes += len(content) - (existing.size if existing else 0)
        return StoreOutcome("replaced" if existing else "stored", final)

    def _check_quota(self, size: int) -> None:
        if self.max_bytes and self._bytes + size > self.max_bytes:
            raise OSError(
                errno.ENOSPC, f"store quota of {self.max_bytes} bytes reached ({self._bytes} used)"
            )

    def _index(
        self,
        sop_instance_uid: str,
        sop_class_uid: str,
        attributes: tuple[str | None, ...],
        transfer_syntax: str,
        final: Path,
        content: bytes,
        source_aet: str,
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid,"
                " study_instance_uid, series_instance_uid, patient_id, transfer_syntax, path,"
                " size, sha256, source_aet, received_at, durable)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,0)",
                (
                    sop_instance_uid,
                    sop_class_uid,
                    *attributes,
                    transfer_syntax,
                    str(final.relative_to(self.data_dir)),
                    len(content),
                    hashlib.sha256(content).hexdigest(),
                    source_aet,
                    time.time(),
                ),
            )

    def _write_atomically(self, final: Path, content: bytes) -> None:
        """Temp file beside the final one, then rename: never a half-written instance under
        its real name. (Not one shared temp directory: create/delete cycles in one directory
        slow file creation down on some file systems.)"""
        if final.parent not in self._directories:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._directories.add(final.parent)
        temp = final.parent / f".{final.name}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            temp.write_bytes(content)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _record_conflict(self, sop_instance_uid: str, sop_class_uid: str, aet: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO class_conflicts VALUES (?,?,?,?)",
                (sop_instance_uid, sop_class_uid, aet, time.time()),
            )

    # -- looking up ----------------------------------------------------------------------------

    def _lookup(self, uids: Sequence[str]) -> dict[str, StoredInstance]:
        found: dict[str, StoredInstance] = {}
        for batch in chunked(list(uids), LOOKUP_BATCH):
            marks = ",".join("?" * len(batch))
            for row in self.db.query(
                "SELECT sop_instance_uid, sop_class_uid, path, size, sha256, durable"
                f" FROM instances WHERE sop_instance_uid IN ({marks})",
                list(batch),
            ):
                path = self._inside_store(row[0], row[2])
                if path is not None:
                    found[row[0]] = StoredInstance(
                        row[0], row[1], path, row[3], row[4], bool(row[5])
                    )
        return found

    def _inside_store(self, sop_instance_uid: str, relative: str) -> Path | None:
        """The file of an index row, or None (logged once per instance) if the row points
        outside the store: such a row is treated as missing, its path never opened. Real
        paths of directories are cached: there are 256 of them, and rows by the million."""
        path = Path(relative)
        full = self.data_dir / path
        inside = (
            not path.is_absolute()
            and ".." not in path.parts
            and path.parts[:1] == ("instances",)
            and self._directory_inside(full.parent)
        )
        if inside:
            return full
        if sop_instance_uid not in self._reported_outside:
            self._reported_outside.add(sop_instance_uid)
            log.error(
                "index row for instance %s points outside the store (%s): treated as missing",
                shown(sop_instance_uid),
                shown(relative),
            )
        return None

    def _directory_inside(self, directory: Path) -> bool:
        known = self._real_directories.get(directory)
        if known is None:
            real = os.path.realpath(directory)
            known = real == self._real_root or real.startswith(self._real_root + os.sep)
            if len(self._real_directories) < 4096:
                self._real_directories[directory] = known
        return known

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM instances")[0][0])

    # -- the commitment barrier ----------------------------------------------------------------

    def verify(self, refs: Sequence[Reference], policy: str) -> list[int]:
        """Failure Reason per reference (0 = committed), checking by ``policy`` (exists, size
        or checksum) and making every instance reported committed durable first."""
        rows = self._lookup([r.sop_instance_uid for r in refs])
        reasons = [self._check(ref, rows.get(ref.sop_instance_uid), policy) for ref in refs]
        passing = {
            ref.sop_instance_uid: rows[ref.sop_instance_uid]
            for ref, reason in zip(refs, reasons, strict=True)
            if reason == 0 and not rows[ref.sop_instance_uid].durable
        }
        if passing:
            barrier_failure = self._make_durable(list(passing.values()))
            if barrier_failure:
                reasons = [
                    barrier_failure if r == 0 and ref.sop_instance_uid in passing else r
                    for ref, r in zip(refs, reasons, strict=True)
                ]
        return reasons

    def _check(self, ref: Reference, row: StoredInstance | None, policy: str) -> int:
        if ref.sop_class_uid not in self.supported_classes:
            return SOP_CLASS_NOT_SUPPORTED
        if row is None:
            if ref.sop_instance_uid in self._refused_for_space:
                return RESOURCE_LIMITATION
            return NO_SUCH_OBJECT_INSTANCE
        if row.sop_class_uid != ref.sop_class_uid:
            return CLASS_INSTANCE_CONFLICT
        problem = file_problem(row, policy)
        if problem:
            log.error("instance %s fails verification: %s", ref.sop_instance_uid, problem)
            return PROCESSING_FAILURE
        return 0

    def _make_durable(self, rows: list[StoredInstance]) -> int:
        """fsync files, then their directories, then mark the rows durable with a synchronous
        commit. Returns 0, or the Failure Reason to report if stable storage failed."""
        try:
            directories: set[Path] = set()
            for row in rows:
                _fsync_path(row.path)
                directories.update((row.path.parent, row.path.parent.parent))
            directories.add(self.root)
            for directory in directories:
                _fsync_path(directory)
            crash_point("scp.barrier.after_fsync")
            with self.db.transaction(durable=True) as conn:
                for batch in chunked([r.sop_instance_uid for r in rows], LOOKUP_BATCH):
                    marks = ",".join("?" * len(batch))
                    conn.execute(
                        f"UPDATE instances SET durable = 1 WHERE sop_instance_uid IN ({marks})",
                        list(batch),
                    )
        except OSError as exc:
            log.error("cannot make %d instances durable: %s", len(rows), exc)
            return RESOURCE_LIMITATION if is_out_of_space(exc) else PROCESSING_FAILURE
        return 0

    # -- after a crash -------------------------------------------------------------------------

    def recover(self) -> int:
        """Drop index rows whose file did not survive a crash intact; clear temp files.
        Returns how many rows were dropped."""
        for leftover in self.root.glob("*/.*.part"):
            leftover.unlink(missing_ok=True)
        dropped = 0
        rows = self.db.query(
            "SELECT sop_instance_uid, sop_class_uid, path, size, sha256, durable"
            " FROM instances WHERE durable = 0"
        )
        for row in rows:
            path = self._inside_store(row[0], row[2])
            if path is None:
                problem: str | None = "it points outside the store"
            else:
                instance = StoredInstance(row[0], row[1], path, row[3], row[4], False)
                problem = file_problem(instance, "checksum")
            if problem:
                log.warning(
                    "instance %s did not survive a restart intact (%s): removed from the index",
                    shown(row[0]),
                    problem,
                )
                with self.db.transaction() as conn:
                    conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (row[0],))
                dropped += 1
        return dropped

    def close(self) -> None:
        self.db.close()


def is_out_of_space(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def file_problem(row: StoredInstance, policy: str) -> str | None:
    """Why the file behind an index row is not what the index says, or None."""
    try:
        size = row.path.stat().st_size
    except OSError as exc:
        return f"file {row.path} unreadable: {exc.strerror}"
    if policy in ("size", "checksum") and size != row.size:
        return f"file {row.path} has {size} bytes, index says {row.size}"
    if policy == "checksum":
        digest = sha256_of(row.path)
        if digest != row.sha256:
            return f"file {row.path} SHA-256 {digest[:12]}… differs from index {row.sha256[:12]}…"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
