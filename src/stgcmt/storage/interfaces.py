"""What the services need from storage, independent of SQLite and of files on a local disk.

These are :class:`typing.Protocol` classes, not ABCs: an implementation conforms by its shape
(mypy checks it where it is assigned, see the conformance block at the end), needs no import of
this module, and pays nothing at run time (no ABC machinery, no ``super()`` chain on the receive
path). A second backend (PostgreSQL) or blob store (object storage) implements the same methods;
:class:`~stgcmt.storage.instances.InstanceStore` and the services do not change.

Failures: methods raise ``OSError`` for storage that is unavailable or full (``errno.ENOSPC`` /
``EDQUOT`` when it is full: the C-STORE answer and the 0213H Failure Reason depend on it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from stgcmt.dicom.commitment import CommitmentReport, Reference

if TYPE_CHECKING:  # the journals' row types are plain dataclasses any backend returns
    from stgcmt.config import RemoteAE
    from stgcmt.storage.scp_journal import Transaction as ScpTransaction
    from stgcmt.storage.scu_journal import FileRow, OnCommit, ReportOutcome
    from stgcmt.storage.scu_journal import Transaction as ScuTransaction

# -- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexedInstance:
    """What the index says about one instance. ``blob`` is the :class:`BlobStore`'s name for its
    bytes as the index holds it: untrusted until :meth:`BlobStore.contains` says it is inside."""

    sop_instance_uid: str
    sop_class_uid: str
    blob: str
    size: int
    sha256: str
    durable: bool
    received_at: float
    """With the UID and SHA-256, which copy this row describes: a copy stored again (even with
    the same bytes, ``--overwrite-duplicates``) is a new file that needs its own sync."""
    read_back: bool = False
    """Made durable after its bytes were read back and matched ``sha256`` (checksum policy)."""
    unsafe: bool = False
    """A sync failed before this copy was durable: the kernel may have dropped its pages, so it
    is never marked durable; a new C-STORE of the instance replaces it."""

    @classmethod
    def of(cls, row: InstanceRow) -> IndexedInstance:
        """What the index says of a row just put (or still pending in a writer)."""
        return cls(
            row.sop_instance_uid,
            row.sop_class_uid,
            row.blob,
            row.size,
            row.sha256,
            row.durable,
            row.received_at,
        )


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance as :meth:`InstanceIndex.put` records it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    patient_id: str | None
    transfer_syntax: str
    blob: str
    size: int
    sha256: str
    source_aet: str | None
    received_at: float
    durable: bool = False


@dataclass(frozen=True)
class JournalTransaction:
    """What both journals' transactions have in common: the journal's number, the Transaction
    UID, a state, counts once known, the last error, and when it last changed. Each journal's
    ``Transaction`` extends it with its own columns (the SCP's requester and delivery, the SCU's
    archive and file action)."""

    id: int
    transaction_uid: str
    state: str
    updated_at: float
    n_committed: int | None
    n_failed: int | None
    last_error: str | None

    @property
    def label(self) -> str:
        """How logs name a transaction: its UID and journal number."""
        return f"transaction {self.transaction_uid} (#{self.id})"


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt to deliver a transaction's report, as the SCP journal's history keeps it:
    when, by which node (None for a journal one node owns), on which association, with what
    outcome (``delivered`` or ``failed``), the error and the next attempt's time."""

    id: int
    tx_id: int
    at: float
    node: str | None
    via: str | None
    outcome: str
    error: str | None
    next_attempt_at: float | None


# -- the instance store's parts -------------------------------------------------------------


class InstanceIndex(Protocol):
    """The instance rows and the SOP Class conflicts."""

    @property
    def node(self) -> str | None:
        """This node's name in an index several nodes share (PostgreSQL); None for an index
        this process holds alone (SQLite), whose totals change only through it."""

    def lookup(self, uids: Sequence[str]) -> dict[str, IndexedInstance]: ...

    def put(self, row: InstanceRow) -> None:
        """Insert or replace one row (raises OSError, ENOSPC when the index is full)."""

    def flush(self) -> None:
        """Write every row put so far (not necessarily durably): from then on a crash of the
        process does not lose them. A commitment's verification calls it before it checks, so
        that a crash while verifying leaves the instances it was asked about in the index."""

    def record_conflict(self, sop_instance_uid: str, sop_class_uid: str, aet: str) -> None:
        """Remember an instance UID received under a second SOP Class (kept once)."""

    def mark_durable(self, rows: Sequence[IndexedInstance], *, read_back: bool) -> set[str]:
        """Mark these rows durable (``read_back``: and read back intact) with a commit that has
        reached stable storage when it returns, and return the UIDs marked. A row is marked
        only while the index still holds that same copy (UID, SHA-256 and ``received_at``
        unchanged, rows still pending in a writer included): a copy stored since the caller's
        sync is left for a sync of its own."""

    def mark_unsafe(self, rows: Sequence[IndexedInstance], received_by: float) -> int:
        """A sync failed at ``received_by`` (epoch seconds): mark unsafe, with a commit that has
        reached stable storage when it returns, the non-durable copies ``rows`` names (UID,
        SHA-256, ``received_at``) and every non-durable copy this node received up to then
        (rows pending in a writer included). Returns how many were marked."""

    def non_durable(self) -> Iterator[IndexedInstance]:
        """Rows not yet made durable and not unsafe, in bounded batches (never all of them in
        memory): what the durability round syncs and what recovery re-checks after a crash."""

    def remove(self, sop_instance_uid: str) -> None: ...

    def count(self) -> int: ...

    def total_bytes(self) -> int: ...

    def close(self) -> None: ...


class BlobWriter(Protocol):
    """A blob being written: nothing is under its name until :meth:`commit`, and nothing is
    left at all after :meth:`discard` or a crash."""

    def write(self, pieces: Sequence[bytes | memoryview]) -> None: ...

    def commit(self) -> None:
        """Put it under its name atomically (the old content or the new, never a part)."""

    def discard(self) -> None:
        """Give up (idempotent; also after a failed :meth:`commit`)."""


class BlobStore(Protocol):
    """Instance bytes, named by a name derived from the SOP Instance UID (never the UID itself).

    Every name read back from the index is untrusted: :meth:`contains` must hold before any
    other method is given it (a name pointing outside the store is never opened)."""

    def name_for(self, sop_instance_uid: str) -> str: ...

    def create(self, name: str) -> BlobWriter:
        """Start writing blob ``name`` piece by piece (a C-STORE streamed as it arrives)."""

    def put(self, name: str, content: bytes) -> None:
        """Store atomically: under ``name`` there is the old content or the new, never a part."""

    def contains(self, name: str) -> bool:
        """Whether ``name`` lies inside this store (the path-containment rule)."""

    def locate(self, name: str) -> str:
        """How log lines show the blob (a path, a URL)."""

    def size(self, name: str) -> int: ...

    def sha256(self, name: str) -> str: ...

    def open(self, name: str) -> IO[bytes]: ...

    def sync(self, names: Sequence[str]) -> None:
        """Make the blobs (and, for files, their directories) reach stable storage."""

    def remove(self, name: str) -> None:
        """Remove a blob; no error if it is already gone."""

    def recover(self) -> int:
        """Clear leftovers of puts interrupted by a crash; returns how many."""

    def close(self) -> None:
        """Release what :meth:`sync` keeps open (the file system's descriptor)."""


# -- journals -------------------------------------------------------------------------------


class ScpJournal(Protocol):
    """The SCP's commitment journal (see :mod:`stgcmt.storage.scp_journal` for the states)."""

    @property
    def path(self) -> Path | str:
        """Where it is, for log lines: the SQLite file, or the database URL (no password)."""

    def record_request(
        self,
        transaction_uid: str,
        calling_aet: str,
        peer_host: str | None,
        report_assoc: str,
        references: Sequence[Reference],
    ) -> ScpTransaction: ...

    def get(self, tx_id: int) -> ScpTransaction: ...

    def in_state(self, *states: str) -> list[ScpTransaction]: ...

    def active_counts(self) -> dict[str, tuple[int, int]]:
        """Unfinished transactions by state (only states that have some): how many in the
        archive, and how many of those this node received (all of them in a journal one node
        owns). What a starting node says it resumes, without a line per transaction."""

    def latest_finished(self, transaction_uid: str) -> ScpTransaction | None: ...

    def claim(self, tx_id: int) -> ScpTransaction | None:
        """Own an active transaction before verifying it or delivering its report: its fresh
        row, or None when it is finished or another node of the cluster holds its lease."""

    def set_state(self, tx_id: int, state: str) -> None: ...

    def reference_batches(self, tx_id: int) -> Iterator[list[tuple[int, Reference]]]: ...

    def record_results(self, tx_id: int, results: Sequence[tuple[int, int]]) -> None: ...

    def finish_verification(self, tx_id: int, first_attempt_at: float) -> ScpTransaction: ...

    def report(self, tx: ScpTransaction, retrieve_ae_title: str) -> CommitmentReport: ...

    def record_failed_attempt(self, tx_id: int, error: str, next_attempt_at: float) -> None: ...

    def postpone(self, tx_id: int, reason: str, next_attempt_at: float) -> None: ...

    def mark_delivered(self, tx_id: int, via: str) -> None: ...

    def mark_given_up(self, tx_id: int, error: str) -> None: ...

    def record_attempt(
        self,
        tx_id: int,
        via: str | None,
        outcome: str,
        error: str | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """Add a delivery attempt to the transaction's history, stamped now and with this
        node. Not a promise: its commit need not reach stable storage by itself (the durable
        state change written after it takes it along)."""

    def attempts(self, tx_id: int) -> list[DeliveryAttempt]:
        """The transaction's delivery attempts, oldest first."""

    def close(self) -> None: ...


class JournalFile(Protocol):
    """What the SCU journal records of a file to send (``stgcmt.scu.dicomfiles.LocalFile``
    has this shape; a Protocol so that storage never imports the SCU service)."""

    @property
    def path(self) -> Path: ...
    @property
    def relpath(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def transfer_syntax(self) -> str: ...


class ScuJournal(Protocol):
    """The SCU's journal (see :mod:`stgcmt.storage.scu_journal` for the states)."""

    path: Path

    def create(
        self,
        transaction_uid: str,
        local_aet: str,
        archive: RemoteAE | str,
        files: Sequence[JournalFile],
        on_commit: OnCommit = "keep",
        move_dir: Path | None = None,
    ) -> ScuTransaction: ...

    def get(self, tx_id: int) -> ScuTransaction: ...

    def find(self, transaction_uid: str) -> ScuTransaction | None: ...

    def in_state(self, *states: str) -> list[ScuTransaction]: ...

    def reporting_archives(self, since: float) -> set[tuple[str, str]]: ...

    def files(self, tx_id: int, *states: str) -> list[FileRow]: ...

    def due_actions(self, tx_id: int | None = None) -> list[tuple[ScuTransaction, FileRow]]: ...

    def record_store(
        self, tx_id: int, seq: int, status: int | None, ok: bool, error: str | None = None
    ) -> None: ...

    def mark_requested(self, tx_id: int) -> list[Reference]: ...

    def set_error(self, tx_id: int, error: str) -> None: ...

    def close_unrequested(self, tx_id: int, state: str, error: str, reason: int | None) -> None: ...

    def record_report(self, report: CommitmentReport, via: str) -> ReportOutcome: ...

    def record_action(self, tx_id: int, seq: int, action: str, note: str) -> None: ...

    def close(self) -> None: ...


# -- read-only views ------------------------------------------------------------------------


class ScpQueries(Protocol):
    """Read-only views of an SCP data dir, safe beside a live service (``stgcmt status``,
    tests, the crash campaign). Rows are plain dicts keyed by column name."""

    def status(self, limit: int = 50) -> dict[str, Any]: ...

    def instances(self) -> list[dict[str, Any]]: ...

    def instance(self, sop_instance_uid: str) -> dict[str, Any] | None: ...

    def class_conflicts(self) -> list[dict[str, Any]]: ...

    def transactions(self) -> list[dict[str, Any]]: ...

    def active_transactions(self) -> int: ...

    def committed_instances(self) -> set[str]:
        """Instances some delivered report committed."""

    def integrity_problems(self) -> list[str]:
        """What an integrity check of the index and the journal found (empty: none)."""

    def find_transactions(
        self,
        *,
        state: str | None = None,
        calling_aet: str | None = None,
        since: float | None = None,
        until: float | None = None,
        transaction_uid: str | None = None,
        patient_id: str | None = None,
        study_uid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Transactions matching every filter given (None: any; times are epoch seconds of
        ``received_at``, ``until`` excluded; Patient ID / Study UID of any referenced instance
        in the index), newest first: ``{"total": N, "items": [row, ...]}``."""

    def transaction(
        self, tx_id: int, *, refs_limit: int | None = None, refs_offset: int = 0
    ) -> dict[str, Any] | None:
        """One transaction's row with ``references`` (``refs_limit`` of them, None: all, from
        ``refs_offset``): seq, SOP Class/Instance UID, failure_reason, and from the index
        study_instance_uid, patient_id, durable."""

    def find_instances(
        self,
        *,
        sop_instance_uid: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        patient_id: str | None = None,
        unsafe: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Index rows (without blob name and checksum) matching every filter, newest first:
        ``{"total": N, "items": [...]}``; ``unsafe`` True: only the copies a failed sync may
        have lost, which the modality must send again."""

    def peers(self) -> list[dict[str, Any]]:
        """Per calling AE: transactions, last_request_at, reports_pending, reports_given_up,
        last_delivered_at, next_attempt_at (of its pending reports), last_error."""


class ScuQueries(Protocol):
    """Read-only views of an SCU journal."""

    def status(self, limit: int = 50) -> dict[str, Any]: ...

    def transactions(self) -> list[dict[str, Any]]: ...

    def due_actions(self) -> int: ...

    def integrity_problems(self) -> list[str]: ...

    def find_transactions(
        self,
        *,
        state: str | None = None,
        archive_aet: str | None = None,
        since: float | None = None,
        until: float | None = None,
        transaction_uid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Transactions matching every filter given (times: ``created_at``), newest first:
        ``{"total": N, "items": [row, ...]}``."""

    def transaction(self, tx_id: int) -> dict[str, Any] | None:
        """One transaction's row with ``files`` (seq, path, UIDs, state, store_status,
        store_error, failure_reason, action, action_note)."""

    def peers(self) -> list[dict[str, Any]]:
        """Per archive (AE, host, port): transactions, pending, last_sent_at, last_report_at,
        last_error."""


if TYPE_CHECKING:  # conformance, checked by mypy: an implementation that drifts fails here
    from stgcmt.storage.files import FileBlobStore
    from stgcmt.storage.queries import SqliteScpQueries, SqliteScuQueries
    from stgcmt.storage.scp_journal import CommitmentJournal
    from stgcmt.storage.scu_journal import ScuJournal as SqliteScuJournal
    from stgcmt.storage.sqlite_index import SqliteInstanceIndex

    def _conformance(
        index: SqliteInstanceIndex,
        blobs: FileBlobStore,
        scp: CommitmentJournal,
        scu: SqliteScuJournal,
        scp_queries: SqliteScpQueries,
        scu_queries: SqliteScuQueries,
    ) -> None:
        _index: InstanceIndex = index
        _blobs: BlobStore = blobs
        _scp: ScpJournal = scp
        _scu: ScuJournal = scu
        _scp_queries: ScpQueries = scp_queries
        _scu_queries: ScuQueries = scu_queries


if TYPE_CHECKING:  # the PostgreSQL backend conforms to the same Protocols
    from stgcmt.storage.postgres.index import PgInstanceIndex
    from stgcmt.storage.postgres.journal import PgScpJournal
    from stgcmt.storage.postgres.queries import PgScpQueries

    def _postgres_conformance(
        index: PgInstanceIndex, scp: PgScpJournal, scp_queries: PgScpQueries
    ) -> None:
        _index: InstanceIndex = index
        _scp: ScpJournal = scp
        _scp_queries: ScpQueries = scp_queries
