"""Helpers for SCU tests: journal transactions in a known state, and UIDs of files."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from stgcmt.dicom.commitment import Reference
from stgcmt.scu.dicomfiles import scan
from stgcmt.storage.scu_journal import ScuJournal

from support.common import write_instances


def pending_transaction(
    journal: ScuJournal, folder: Path, count: int, transaction_uid: str = "1.2.3.9", **create
) -> list:
    """A transaction whose files were all stored and requested; returns its files."""
    files = scan(write_instances(folder, count)).files
    tx = journal.create(transaction_uid, "CT1", "ARCHIVE@127.0.0.1:104", files, **create)
    for seq in range(count):
        journal.record_store(tx.id, seq, 0, True)
    journal.mark_requested(tx.id)
    return files


def refs(files) -> list[Reference]:
    return [Reference(f.sop_class_uid, f.sop_instance_uid) for f in files]


def uids(paths: list[Path]) -> set[str]:
    return {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
