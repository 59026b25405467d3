"""What happens to a committed file: deleted, or moved without overwriting anything, each
action recorded in the journal so a crash leaves it ``due`` and a restart finishes it."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterable
from itertools import count
from pathlib import Path

from stgcmt.faults import crash_point
from stgcmt.storage.fsync import fsync_path
from stgcmt.storage.scu_journal import FileRow, ScuJournal, Transaction

log = logging.getLogger("stgcmt.scu.files")


def act_on(tx: Transaction, row: FileRow) -> tuple[str, str]:
    """Delete or move one committed file; returns the new action state and a note. Idempotent:
    a file already gone counts as done, so a restart can simply run every ``due`` action again.
    A file whose size or modification time changed since it was sent is not the file the
    archive committed, and is kept."""
    path = Path(row.path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "done", "already gone"
    if (stat.st_size, stat.st_mtime_ns) != (row.size, row.mtime_ns):
        return "skipped", "kept: the file changed after it was sent"
    if tx.on_commit == "delete":
        path.unlink(missing_ok=True)
        return "done", "deleted"
    target = move_without_overwrite(path, Path(tx.move_dir or "."), row.relpath)
    return "done", f"moved to {target}"


def move_without_overwrite(src: Path, target_dir: Path, relpath: str) -> Path:
    """Move ``src`` to ``target_dir/relpath``, or ``name.1.dcm``, ``name.2.dcm``... if that is
    taken: a hard link never replaces an existing file, and the source is removed only once the
    new name is durable. A link left by a crash before the unlink is recognised and reused."""
    wanted = target_dir / relpath
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for candidate in _names(wanted):
        if candidate.exists() and os.path.samefile(src, candidate):
            break
        try:
            _link_or_copy(src, candidate)
        except FileExistsError:
            continue
        break
    fsync_path(candidate.parent)
    src.unlink()
    return candidate


def _names(wanted: Path) -> Iterable[Path]:
    yield wanted
    for n in count(1):
        yield wanted.with_name(f"{wanted.stem}.{n}{wanted.suffix}")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
        shutil.copy2(src, temp)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(temp, dst)
        finally:
            temp.unlink()


SKIPPED_SHOWN = 5
"""Files kept because they changed, logged one by one at WARNING; the rest at DEBUG."""


def perform_actions(journal: ScuJournal, rows: Iterable[tuple[Transaction, FileRow]]) -> None:
    """Run due delete/move actions, recording each; an error leaves the action due (retried by
    the next agent start). Each file is logged at DEBUG, each transaction once at INFO (how
    many were deleted/moved, kept, left due)."""
    tally: dict[int, tuple[Transaction, dict[str, int]]] = {}
    for tx, row in rows:
        counts = tally.setdefault(tx.id, (tx, {}))[1]
        try:
            state, note = act_on(tx, row)
        except OSError as exc:
            log.error("%s: cannot %s %s (will retry): %s", tx.label, tx.on_commit, row.path, exc)
            journal.record_action(tx.id, row.seq, "due", f"error: {exc}")
            counts["due"] = counts.get("due", 0) + 1
            continue
        journal.record_action(tx.id, row.seq, state, note)
        crash_point("scu.purge.mid")
        counts[state] = counts.get(state, 0) + 1
        loud = state != "done" and counts[state] <= SKIPPED_SHOWN
        log.log(logging.WARNING if loud else logging.DEBUG, "%s: %s: %s", tx.label, row.path, note)
    for tx, counts in tally.values():
        verb = "deleted" if tx.on_commit == "delete" else "moved"
        parts = [f"{counts.get('done', 0)} {verb}"]
        if counts.get("skipped"):
            parts.append(f"{counts['skipped']} kept (changed after sending)")
        if counts.get("due"):
            parts.append(f"{counts['due']} still due (errors, retried by the agent)")
        level = logging.INFO if len(parts) == 1 else logging.WARNING
        log.log(level, "%s: %s", tx.label, ", ".join(parts))


def finish_due_actions(journal: ScuJournal) -> None:
    """After a crash or restart: finish every delete/move recorded as due."""
    due = journal.due_actions()
    if due:
        log.info("finishing %d delete/move actions left from before", len(due))
        perform_actions(journal, due)
