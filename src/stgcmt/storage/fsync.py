"""Pushing files and directories to stable storage: the one place that knows how.

A rename or a new file is durable only once its directory is synced too, so callers sync the
files, then every directory whose entries changed (the store's barrier, the SCU's move).

Two ways for a whole barrier:

- :class:`FileSystemSync`: one ``syncfs`` of the file system, which writes back everything
  dirty on it (data, inodes, directories) in one go. It is trusted only where it reports
  write-back errors: since Linux 5.8 ``syncfs`` returns an error that hit the file system
  since the file descriptor it is given was opened (errseq), so that descriptor is opened at
  start-up and kept; and only on local file systems whose ``sync_fs`` really writes back
  (FUSE, NFS and overlay answer ``syncfs`` without doing it, or without the errors).
- :func:`fsync_files_and_directories`: ``fsync`` of each file from a pool of threads (each
  ``fsync`` waits on the disk, not on the GIL), then each directory once.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FSYNC_THREADS = 32
"""Enough parallel fsyncs to fill a disk's queue; more only adds threads."""
SYNCFS_SINCE = (5, 8)
"""First Linux whose ``syncfs`` reports write-back errors (errseq on the super block)."""
SYNCFS_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})
"""File systems whose ``syncfs`` writes back everything and returns its errors."""


def fsync_path(path: Path | str) -> None:
    """fsync a file or a directory by path (a directory is opened read-only, which POSIX
    allows and Linux needs for fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files_and_directories(files: Iterable[Path], directories: Iterable[Path]) -> None:
    """fsync every file, then every directory (the order a crash-safe barrier needs), each
    step from a pool of threads. Every fsync runs even when one fails; the first failure is
    then raised (a barrier that failed anywhere has failed)."""
    _fsync_parallel(list(files))
    _fsync_parallel(list(dict.fromkeys(directories)))


def _fsync_parallel(paths: list[Path]) -> None:
    if len(paths) <= 1:
        for path in paths:
            fsync_path(path)
        return
    with ThreadPoolExecutor(min(FSYNC_THREADS, len(paths)), "stgcmt-fsync") as pool:
        failures = [exc for exc in pool.map(_fsync_caught, paths) if exc is not None]
    if failures:
        raise failures[0]


def _fsync_caught(path: Path) -> OSError | None:
    try:
        fsync_path(path)
    except OSError as exc:
        return exc
    return None


def missing_directories(path: Path) -> list[Path]:
    """``path`` and those of its ancestors that do not exist yet, outermost first: what a
    ``mkdir(parents=True)`` is about to create."""
    missing = []
    for directory in (path, *path.parents):
        if directory.exists():
            break
        missing.append(directory)
    return missing[::-1]


def fsync_created(directories: Iterable[Path]) -> None:
    """After creating ``directories`` (outermost first): fsync the parent of each, so that the
    new entries survive a power cut (a new directory is durable only once its parent is)."""
    for directory in directories:
        fsync_path(directory.parent)


class FileSystemSync:
    """``syncfs`` of the file system holding ``directory``, through a descriptor opened now and
    kept until :meth:`close`, so that every write-back error from now on is reported to it."""

    def __init__(self, directory: Path) -> None:
        self._syncfs = _syncfs_function()
        self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)

    def sync(self) -> None:
        """Write back everything dirty on the file system; raises OSError on a write-back
        error since start-up (or since the last one reported)."""
        self._syncfs(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def syncfs_untrusted(directory: Path) -> str | None:
    """Why ``syncfs`` cannot be the barrier for ``directory`` (None: it can)."""
    release = _kernel_release()
    if release < SYNCFS_SINCE:
        return f"Linux {'.'.join(map(str, release))} < 5.8 does not report write-back errors"
    kind = file_system_type(directory)
    if kind not in SYNCFS_FILE_SYSTEMS:
        return f"its file system ({kind}) is not known to write back and report on syncfs"
    return None


def _kernel_release() -> tuple[int, int]:
    """(major, minor) of the running Linux; (0, 0) elsewhere or when it cannot be read."""
    if os.uname().sysname != "Linux":
        return (0, 0)
    try:
        major, minor = os.uname().release.split(".")[:2]
        return (int(major), int("".join(c for c in minor if c.isdigit()) or 0))
    except ValueError:
        return (0, 0)


def file_system_type(directory: Path) -> str:
    """The type (``ext4``, ``fuse.lazyfs``…) of the mount holding ``directory``, matched by its
    device number in ``/proc/self/mountinfo``; ``unknown`` when there is none."""
    device = os.stat(directory).st_dev
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    kinds = [
        line.split(" - ", 1)[1].split()[0]
        for line in lines
        if line.split()[2:3] == [wanted] and " - " in line
    ]
    return kinds[-1] if kinds else "unknown"


def _syncfs_function() -> Callable[[int], None]:
    """``os.syncfs`` where Python has it, else libc's through ctypes."""
    native = getattr(os, "syncfs", None)
    if native is not None:
        return native
    libc = ctypes.CDLL(None, use_errno=True)

    def syncfs(fd: int) -> None:
        if libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}")

    return syncfs
