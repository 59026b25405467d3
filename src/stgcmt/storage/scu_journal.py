"""The SCU's journal: what was sent, what was asked to be committed, and what to do on commit.

It is the memory that lets a report arriving hours later, to another process (``stgcmt agent``)
or after a restart, still delete exactly the files that were sent and committed, and nothing
else. A transaction and its files are written before the first C-STORE; every C-STORE status is
recorded; the transaction becomes ``pending`` durably *before* the N-ACTION leaves, so a report
can never arrive for a transaction the journal does not know. A report's outcome is recorded
durably before any file is touched, and the file actions are idempotent, so a crash between the
two is finished by the next start. Transaction states::

    storing -> pending -> committed | failed
            -> aborted (connection lost before the N-ACTION: nothing was requested)

File states: ``queued -> stored | store_failed``, ``stored -> pending -> committed | failed``;
``aborted`` for the files of an aborted transaction that were not settled (queued, stored or
pending: no commitment was requested for them; the transaction's ``last_error`` says why).
A file's ``action`` is NULL (nothing to do), ``due`` (committed, delete/move not yet done),
``done`` or ``skipped`` (the file had changed or vanished), with ``action_note`` saying what
happened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stgcmt.config import ConfigError, RemoteAE
from stgcmt.dicom.commitment import CommitmentReport, Reference
from stgcmt.storage.interfaces import JournalFile, JournalTransaction
from stgcmt.storage.sqlite import Database

STORING = "storing"
PENDING = "pending"
COMMITTED = "committed"
FAILED = "failed"
ABORTED = "aborted"
TX_STATES = (STORING, PENDING, COMMITTED, FAILED, ABORTED)

QUEUED = "queued"
STORED = "stored"
STORE_FAILED = "store_failed"
FILE_STATES = (QUEUED, STORED, STORE_FAILED, PENDING, COMMITTED, FAILED, ABORTED)

OnCommit = Literal["keep", "delete", "move"]


SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_uid TEXT NOT NULL UNIQUE,
    local_aet TEXT NOT NULL,
    archive TEXT NOT NULL,
    on_commit TEXT NOT NULL,
    move_dir TEXT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    requested_at REAL,
    reported_at REAL,
    report_via TEXT,
    n_files INTEGER NOT NULL,
    n_committed INTEGER,
    n_failed INTEGER,
    last_error TEXT,
    archive_aet TEXT,
    archive_host TEXT,
    archive_port INTEGER
);
CREATE INDEX IF NOT EXISTS transactions_state ON transactions (state);
CREATE TABLE IF NOT EXISTS files (
    tx_id INTEGER NOT NULL REFERENCES transactions (id),
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    relpath TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sop_class_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    state TEXT NOT NULL,
    store_status INTEGER,
    store_error TEXT,
    failure_reason INTEGER,
    action TEXT,
    action_note TEXT,
    PRIMARY KEY (tx_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_action_due ON files (action) WHERE action = 'due'
"""


def default_journal_path() -> Path:
    """``$XDG_STATE_HOME/stgcmt/scu-journal.sqlite``, else ``~/.local/state/stgcmt/...``: state
    that must survive reboots but is not configuration (XDG Base Directory spec)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stgcmt" / "scu-journal.sqlite"


@dataclass(frozen=True)
class Transaction(JournalTransaction):
    """A sending as the SCU journal holds it (shared columns in :class:`JournalTransaction`)."""

    local_aet: str
    archive: str
    on_commit: str
    move_dir: str | None
    created_at: float
    requested_at: float | None
    reported_at: float | None
    report_via: str | None
    n_files: int
    archive_aet: str | None = None
    """The archive asked (its AE title, host and port): only it may report for this
    transaction. None only when an old journal's ``archive`` text could not be parsed: then
    no report is accepted for it."""
    archive_host: str | None = None
    archive_port: int | None = None


@dataclass(frozen=True)
class FileRow:
    tx_id: int
    seq: int
    path: str
    relpath: str
    size: int
    mtime_ns: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    state: str
    store_status: int | None
    store_error: str | None
    failure_reason: int | None
    action: str | None
    action_note: str | None


@dataclass(frozen=True)
class ReportOutcome:
    """What recording a report did. ``claimed`` is True for exactly one caller per transaction
    (the one that moved it out of ``pending``); ``tx`` is None for an unknown Transaction UID."""

    tx: Transaction | None
    claimed: bool
    ignored: int = 0
    """References in the report that are not pending files of this transaction."""


_TX_COLUMNS = ", ".join(Transaction.__dataclass_fields__)
_FILE_COLUMNS = ", ".join(FileRow.__dataclass_fields__)


class ScuJournal:
    """Shared by ``send`` and ``agent`` (even in two processes): every state change is a single
    SQLite write transaction guarded by the state it starts from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(path, SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Journals written before the archive's AE title, host and port had columns get them,
        filled from the ``archive`` text (``AET@HOST:PORT``): their pending transactions keep
        the right to be reported by that archive, and only by it. Files of aborted transactions
        that older versions left ``queued``/``stored``/``failed`` without a reason become
        ``aborted`` (idempotent; no schema change)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE files SET state = ? WHERE (state IN (?, ?, ?) OR (state = ? AND"
                " failure_reason IS NULL)) AND tx_id IN (SELECT id FROM transactions WHERE"
                " state = ? AND reported_at IS NULL)",
                (ABORTED, QUEUED, STORED, PENDING, FAILED, ABORTED),
            )
            have = {row[1] for row in conn.execute("PRAGMA table_info(transactions)")}
            missing = [c for c in _ARCHIVE_COLUMNS if c[0] not in have]
            for name, kind in missing:
                conn.execute(f"ALTER TABLE transactions ADD COLUMN {name} {kind}")
            if not missing:
                return
            rows = conn.execute("SELECT id, archive FROM transactions").fetchall()
            conn.executemany(
                "UPDATE transactions SET archive_aet = ?, archive_host = ?, archive_port = ?"
                " WHERE id = ?",
                [(*_archive_parts(text), tx_id) for tx_id, text in rows],
            )

    def create(
        self,
        transaction_uid: str,
        local_aet: str,
        archive: RemoteAE | str,
        files: Sequence[JournalFile],
        on_commit: OnCommit = "keep",
        move_dir: Path | None = None,
    ) -> Transaction:
        """Record a transaction and its files before anything is sent; ``archive`` is the one
        we send to (``AET@HOST:PORT`` text is parsed), the only one that may report for it."""
        now = time.time()
        with self.db.transaction(durable=True) as conn:
            cursor = conn.execute(
                "INSERT INTO transactions (transaction_uid, local_aet, archive, on_commit,"
                " move_dir, state, created_at, updated_at, n_files, archive_aet, archive_host,"
                " archive_port) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    transaction_uid,
                    local_aet,
                    str(archive),
                    on_commit,
                    str(move_dir) if move_dir else None,
                    STORING,
                    now,
                    now,
                    len(files),
                    *_archive_parts(archive),
                ),
            )
            tx_id = int(cursor.lastrowid or 0)
            conn.executemany(
                "INSERT INTO files (tx_id, seq, path, relpath, size, mtime_ns, sop_class_uid,"
                " sop_instance_uid, transfer_syntax, state) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    (tx_id, seq, str(f.path), f.relpath, f.size, f.mtime_ns, f.sop_class_uid)
                    + (f.sop_instance_uid, f.transfer_syntax, QUEUED)
                    for seq, f in enumerate(files)
                ),
            )
        return self.get(tx_id)

    # -- reading -------------------------------------------------------------------------------

    def get(self, tx_id: int) -> Transaction:
        rows = self.db.query(f"SELECT {_TX_COLUMNS} FROM transactions WHERE id = ?", (tx_id,))
        return Transaction(*rows[0])

    def find(self, transaction_uid: str) -> Transaction | None:
        rows = self.db.query(
            f"SELECT {_TX_COLUMNS} FROM transactions WHERE transaction_uid = ?", (transaction_uid,)
        )
        return Transaction(*rows[0]) if rows else None

    def in_state(self, *states: str) -> list[Transaction]:
        marks = ",".join("?" * len(states))
        rows = self.db.query(
            f"SELECT {_TX_COLUMNS} FROM transactions WHERE state IN ({marks}) ORDER BY id", states
        )
        return [Transaction(*row) for row in rows]

    def reporting_archives(self, since: float) -> set[tuple[str, str]]:
        """(AE title, host) of every archive that may open an association to report: one with a
        pending transaction, or whose report we recorded after ``since`` (it may deliver again
        when our answer was lost, and must get its Success)."""
        rows = self.db.query(
            "SELECT DISTINCT archive_aet, archive_host FROM transactions WHERE archive_aet IS NOT"
            " NULL AND archive_host IS NOT NULL AND (state = ? OR reported_at >= ?)",
            (PENDING, since),
        )
        return {(aet, host) for aet, host in rows}

    def files(self, tx_id: int, *states: str) -> list[FileRow]:
        where = f" AND state IN ({','.join('?' * len(states))})" if states else ""
        rows = self.db.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE tx_id = ?{where} ORDER BY seq",
            (tx_id, *states),
        )
        return [FileRow(*row) for row in rows]

    def due_actions(self, tx_id: int | None = None) -> list[tuple[Transaction, FileRow]]:
        """Committed files whose delete/move is not done yet: of one transaction, or all (left
        by a crash, or by an error)."""
        rows = self.db.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE action = 'due'"
            " AND (? IS NULL OR tx_id = ?) ORDER BY tx_id, seq",
            (tx_id, tx_id),
        )
        files = [FileRow(*row) for row in rows]
        txs = {tx_id: self.get(tx_id) for tx_id in {f.tx_id for f in files}}
        return [(txs[f.tx_id], f) for f in files]

    # -- sending -------------------------------------------------------------------------------

    def record_store(
        self, tx_id: int, seq: int, status: int | None, ok: bool, error: str | None = None
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE files SET state = ?, store_status = ?, store_error = ? WHERE tx_id = ?"
                " AND seq = ?",
                (STORED if ok else STORE_FAILED, status, error, tx_id, seq),
            )

    def mark_requested(self, tx_id: int) -> list[Reference]:
        """Durably make the transaction pending, before the N-ACTION is sent; returns the
        references to request (the files whose C-STORE succeeded)."""
        with self.db.transaction(durable=True) as conn:
            conn.execute(
                "UPDATE files SET state = ? WHERE tx_id = ? AND state = ?",
                (PENDING, tx_id, STORED),
            )
            conn.execute(
                "UPDATE transactions SET state = ?, requested_at = ?, updated_at = ? WHERE id = ?",
                (PENDING, time.time(), time.time(), tx_id),
            )
        return [Reference(f.sop_class_uid, f.sop_instance_uid) for f in self.files(tx_id, PENDING)]

    def set_error(self, tx_id: int, error: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE transactions SET last_error = ?, updated_at = ? WHERE id = ?",
                (error, time.time(), tx_id),
            )

    def close_unrequested(self, tx_id: int, state: str, error: str, reason: int | None) -> None:
        """End a transaction whose N-ACTION was never sent or was refused (no report will
        come): its pending files fail with ``reason``; when it is ``aborted``, every file not
        settled (queued, stored, pending) becomes ``aborted`` (``error`` says why)."""
        with self.db.transaction(durable=True) as conn:
            if state == ABORTED:
                conn.execute(
                    "UPDATE files SET state = ? WHERE tx_id = ? AND state IN (?, ?, ?)",
                    (ABORTED, tx_id, QUEUED, STORED, PENDING),
                )
            conn.execute(
                "UPDATE files SET state = ?, failure_reason = ? WHERE tx_id = ? AND state IN"
                " (?, ?)",
                (FAILED, reason, tx_id, PENDING, STORED),
            )
            self._finish(conn, tx_id, state, error)

    # -- reports -------------------------------------------------------------------------------

    def record_report(self, report: CommitmentReport, via: str) -> ReportOutcome:
        """Claim a pending transaction and record, durably, which of its files the report
        committed. Only a file that was stored and requested, whose SOP Class and Instance are
        in the Referenced SOP Sequence and not in the Failed SOP Sequence, is committed; any
        other requested file fails (with no reason if the report did not mention it)."""
        committed = {(r.sop_class_uid, r.sop_instance_uid) for r in report.committed}
        failed = {(r.sop_class_uid, r.sop_instance_uid): r.failure_reason for r in report.failed}
        with self.db.transaction(durable=True) as conn:
            row = conn.execute(
                f"SELECT {_TX_COLUMNS} FROM transactions WHERE transaction_uid = ?",
                (report.transaction_uid,),
            ).fetchone()
            if row is None:
                return ReportOutcome(None, False)
            tx = Transaction(*row)
            if tx.state != PENDING:
                return ReportOutcome(tx, False)
            pending = conn.execute(
                "SELECT seq, sop_class_uid, sop_instance_uid FROM files WHERE tx_id = ?"
                " AND state = ?",
                (tx.id, PENDING),
            ).fetchall()
            updates = [_file_outcome(tx, seq, (c, i), committed, failed) for seq, c, i in pending]
            conn.executemany(
                "UPDATE files SET state = ?, failure_reason = ?, action = ? WHERE tx_id = ?"
                " AND seq = ?",
                updates,
            )
            conn.execute(
                "UPDATE transactions SET reported_at = ?, report_via = ? WHERE id = ?",
                (time.time(), via, tx.id),
            )
            self._finish(conn, tx.id, None, None)
        known = {(c, i) for _, c, i in pending}
        ignored = len((committed | set(failed)) - known)
        return ReportOutcome(self.get(tx.id), True, ignored)

    def _finish(self, conn, tx_id: int, state: str | None, error: str | None) -> None:
        """Count file outcomes and close the transaction: committed only if every file is.
        ``n_failed`` counts failed references only (not files whose C-STORE failed, nor
        aborted ones)."""
        n_files, n_committed, n_failed = conn.execute(
            "SELECT count(*), coalesce(sum(state = ?), 0), coalesce(sum(state = ?), 0)"
            " FROM files WHERE tx_id = ?",
            (COMMITTED, FAILED, tx_id),
        ).fetchone()
        final = state or (COMMITTED if n_committed == n_files else FAILED)
        conn.execute(
            "UPDATE transactions SET state = ?, n_committed = ?, n_failed = ?,"
            " last_error = coalesce(?, last_error), updated_at = ? WHERE id = ?",
            (final, n_committed, n_failed, error, time.time(), tx_id),
        )

    def record_action(self, tx_id: int, seq: int, action: str, note: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE files SET action = ?, action_note = ? WHERE tx_id = ? AND seq = ?",
                (action, note, tx_id, seq),
            )

    def close(self) -> None:
        self.db.close()


_ARCHIVE_COLUMNS = (("archive_aet", "TEXT"), ("archive_host", "TEXT"), ("archive_port", "INTEGER"))


def _archive_parts(archive: RemoteAE | str) -> tuple[str | None, str | None, int | None]:
    """(AE title, host, port) of an archive; Nones for text that is not ``AET@HOST:PORT``
    (nobody can then report for such a transaction: it stays pending, nothing is deleted)."""
    if isinstance(archive, str):
        try:
            archive = RemoteAE.parse(archive)
        except ConfigError:
            return None, None, None
    return archive.aet, archive.host, archive.port


def _file_outcome(
    tx: Transaction,
    seq: int,
    key: tuple[str, str],
    committed: set[tuple[str, str]],
    failed: dict[tuple[str, str], int],
) -> tuple[str, int | None, str | None, int, int]:
    if key in committed and key not in failed:
        return COMMITTED, None, None if tx.on_commit == "keep" else "due", tx.id, seq
    return FAILED, failed.get(key), None, tx.id, seq
