"""Local DICOM files for the SCU: find them, read their identity, split them into transactions.

Only the File Meta Information and the first elements of the data set are read, by stgcmt's own
Part 10 reader (:mod:`stgcmt.dicom.part10`, microseconds a file where pydicom took milliseconds),
so a folder of large images is scanned quickly. Anything that is not a readable Part 10 file with a
SOP Class, SOP Instance and transfer syntax is skipped with a warning rather than aborting the
whole send: a stray ``DICOMDIR``, a ``.txt`` or a half-copied file must not block the rest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from stgcmt.dicom.datasets import NotPart10, Part10Header, read_part10_header
from stgcmt.dicom.part10 import MalformedDataset, scanned_attributes
from stgcmt.dicom.uids import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN

log = logging.getLogger("stgcmt.scu.dicomfiles")

GroupBy = Literal["study", "series"] | None

HEAD = 64 * 1024
"""Bytes of the data set read first: its identifying attributes (up to Series Instance UID)
come before the pixels and fit in this in nearly every file; the rest is read only when not."""
_WHOLE = frozenset({EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN})
"""Syntaxes :func:`scanned_attributes` hands whole to pydicom (rare): no head to scan."""
_UIDS = 4
"""SOP Class, SOP Instance, Study and Series Instance UID: the first of what is scanned."""


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
        with open(path, "rb") as f:
            meta = read_part10_header(f)
            found = _identity(f, meta.transfer_syntax)
    except MalformedDataset as exc:
        return Skipped(path, f"cannot parse: {exc}")
    except NotPart10:
        return Skipped(path, "not a DICOM Part 10 file")
    except ValueError as exc:  # File Meta without the UIDs it must hold, or cut short
        return Skipped(path, f"cannot parse: {exc}")
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}")
    return _local_file(path, relpath, meta, found, stat)


def _identity(f: BinaryIO, transfer_syntax: str) -> tuple[str | None, ...]:
    """(SOP Class, SOP Instance, Study, Series UID, Patient ID) of the data set at ``f``'s
    position, scanned in its first :data:`HEAD` bytes; the whole data set is read only if they
    do not hold the four UIDs (a large element before them, or one missing), or if the syntax
    needs pydicom."""
    if transfer_syntax in _WHOLE:
        return scanned_attributes(f.read(), transfer_syntax)
    head = f.read(HEAD)
    try:
        found = scanned_attributes(head, transfer_syntax)
    except MalformedDataset:
        if len(head) < HEAD:  # the whole data set, and it is broken
            raise
        found = (None,)  # an element cut where the head ends
    if len(head) < HEAD or all(found[:_UIDS]):
        return found
    return scanned_attributes(head + f.read(), transfer_syntax)


def _local_file(
    path: Path,
    relpath: str,
    meta: Part10Header,
    found: tuple[str | None, ...],
    stat: os.stat_result,
) -> LocalFile | Skipped:
    """The file to send, or why not: the data set's SOP Class (else the File Meta's) and SOP
    Instance UID are required."""
    sop_class, sop_instance, study, series = found[:_UIDS]
    sop_class = sop_class or meta.sop_class_uid
    if not sop_class or not sop_instance:
        identity = {"SOP Class UID": sop_class, "SOP Instance UID": sop_instance}
        return Skipped(path, f"no {', '.join(k for k, v in identity.items() if not v)}")
    return LocalFile(
        path=path,
        relpath=relpath,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax=meta.transfer_syntax,
        study_uid=study or "",
        series_uid=series or "",
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
