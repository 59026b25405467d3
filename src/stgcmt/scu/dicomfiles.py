"""Local DICOM files for the SCU: find them, read their identity, split them into transactions.

Only the Part 10 header and the identifying attributes are read (``stop_before_pixels``), so a
folder of large images is scanned quickly. Anything that is not a readable Part 10 file with a
SOP Class, SOP Instance and transfer syntax is skipped with a warning rather than aborting the
whole send: a stray ``DICOMDIR``, a ``.txt`` or a half-copied file must not block the rest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

log = logging.getLogger("stgcmt.scu.dicomfiles")

GroupBy = Literal["study", "series"] | None

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]


@dataclass(frozen=True)
class LocalFile:
    """A Part 10 file to send. ``relpath`` is its path below the argument it was found under,
    so ``--move-committed`` can keep the folder layout; ``size``/``mtime_ns`` identify the
    exact file that was sent, so a file replaced since is never deleted in its place."""

    path: Path
    relpath: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    study_uid: str
    series_uid: str
    size: int
    mtime_ns: int

    @property
    def context(self) -> tuple[str, str]:
        """The presentation context this file needs."""
        return self.sop_class_uid, self.transfer_syntax


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Scan:
    files: list[LocalFile]
    skipped: list[Skipped]


def scan(paths: Iterable[Path]) -> Scan:
    """Read every file named or found below the folders named, in a stable order. Files that
    are not usable DICOM, and second copies of an SOP Instance UID, are skipped with a warning."""
    result = Scan([], [])
    seen: dict[str, Path] = {}
    for root in paths:
        for path, relpath in _walk(Path(root)):
            item = read_file(path, relpath)
            if isinstance(item, LocalFile) and item.sop_instance_uid in seen:
                item = Skipped(path, f"same SOP Instance UID as {seen[item.sop_instance_uid]}")
            if isinstance(item, Skipped):
                log.warning("skipped %s: %s", item.path, item.reason)
                result.skipped.append(item)
                continue
            seen[item.sop_instance_uid] = path
            result.files.append(item)
    return result


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    if not root.is_dir():
        yield root, root.name
        return
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            yield path, path.relative_to(root).as_posix()


def read_file(path: Path, relpath: str) -> LocalFile | Skipped:
    """Identify one file, or say why it cannot be sent."""
    try:
        stat = path.stat()
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    except InvalidDicomError:
        return Skipped(path, "not a DICOM Part 10 file")
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # pydicom raises many types on damaged files
        return Skipped(path, f"cannot parse: {exc}")
    meta = ds.file_meta
    syntax = str(meta.get("TransferSyntaxUID", ""))
    sop_class = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
    sop_instance = str(ds.get("SOPInstanceUID", ""))
    identity = {
        "transfer syntax": syntax,
        "SOP Class UID": sop_class,
        "SOP Instance UID": sop_instance,
    }
    missing = [name for name, value in identity.items() if not value]
    if missing:
        return Skipped(path, f"no {', '.join(missing)}")
    return LocalFile(
        path=path,
        relpath=relpath,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax=syntax,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
    )


def split(
    files: Sequence[LocalFile], group_by: GroupBy = None, max_refs: int | None = None
) -> list[list[LocalFile]]:
    """Split files into transactions: one per study or series if asked, each cut to at most
    ``max_refs`` references (archives limit the size of an N-ACTION)."""
    if max_refs is not None and max_refs < 1:
        raise ValueError("max_refs must be at least 1")
    groups: dict[str, list[LocalFile]] = {}
    for f in files:
        key = {"study": f.study_uid, "series": f.series_uid}.get(group_by or "", "")
        groups.setdefault(key, []).append(f)
    size = max_refs or max(1, len(files))
    return [
        group[start : start + size]
        for group in groups.values()
        for start in range(0, len(group), size)
    ]
