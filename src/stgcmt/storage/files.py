"""The file :class:`~stgcmt.storage.interfaces.BlobStore`: Part 10 files under
``<data_dir>/instances``, fanned out by the SHA-256 of the instance UID.

A blob's name is its path relative to the data dir (``instances/ab/ab….dcm``), which is what the
index has always held. Names read back from the index are untrusted: one that is absolute,
contains ``..``, is not under ``instances/`` or whose directory resolves outside the store (a
symlink) is refused by :meth:`FileBlobStore.contains` and never opened.

A blob is written through a :class:`FileBlobWriter`: into an unnamed file (``O_TMPFILE``) that
:meth:`FileBlobWriter.commit` links under its name, so a crash or an aborted C-STORE leaves
nothing behind; where the file system cannot do that (FUSE, some network file systems), into a
temp file beside the final one, renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from stgcmt.config import Durability
from stgcmt.storage.fsync import (
    FileSystemSync,
    fsync_created,
    fsync_files_and_directories,
    fsync_path,
    missing_directories,
    syncfs_untrusted,
)
from stgcmt.storage.sqlite import ensure_writable_dir

log = logging.getLogger(__name__)

ROOT_NAME = "instances"
_REAL_DIRECTORY_CACHE = 4096
_FILE_MODE = 0o666
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_PROBE_NAME = ".stgcmt-tmpfile-probe"
TEMP_SUFFIX = ".part"
TEMP_MAX_AGE = 3600.0
"""Seconds after which a temp file of another node is taken as a crash's leftover: far longer
than any C-STORE is left idle (the PDU and network timeouts are seconds to minutes), so a node
starting on a shared data dir never removes a temp file another node is still writing."""


def node_tag(node: str) -> str:
    """A node's name as it appears in its temp files' names: readable, file-name safe, and
    told apart by a hash where two names differ only in characters that are replaced."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "-", node)[:40]
    return f"{readable}-{hashlib.sha256(node.encode()).hexdigest()[:8]}"


def _temp_tag(file_name: str) -> str | None:
    """The node tag in a temp file's name (``.<blob>.<tag>.<pid>.<thread>.part``); None for a
    name of another form (one written before temp names held the node)."""
    parts = file_name.removesuffix(TEMP_SUFFIX).split(".")
    return parts[-3] if len(parts) >= 6 and parts[-2].isdigit() and parts[-1].isdigit() else None


def _open_directory(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _link_by_fd(fd: int, name: str, directory_fd: int) -> None:
    """linkat(/proc/self/fd/N, AT_SYMLINK_FOLLOW): names an O_TMPFILE file. (``os.link`` calls
    plain link(), which does not follow the /proc link, unless it is given a directory fd.)"""
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=directory_fd, follow_symlinks=True)


def _unnamed_files_work(directory: Path) -> bool:
    """Whether ``directory`` takes an ``O_TMPFILE`` file and links it by its /proc name (Linux
    and most local file systems; not FUSE before Linux 6.x, not /proc-less sandboxes)."""
    if not _O_TMPFILE:
        return False
    directory_fd = _open_directory(directory)
    try:
        fd = os.open(".", _O_TMPFILE | os.O_WRONLY, _FILE_MODE, dir_fd=directory_fd)
    except OSError:
        os.close(directory_fd)
        return False
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_PROBE_NAME, dir_fd=directory_fd)
        _link_by_fd(fd, _PROBE_NAME, directory_fd)
        os.unlink(_PROBE_NAME, dir_fd=directory_fd)
    except OSError:
        return False
    finally:
        os.close(fd)
        os.close(directory_fd)
    return True


class FileBlobWriter:
    """One blob being written, in the directory ``directory_fd`` (kept open by the store).
    Nothing is under its name until :meth:`commit`; :meth:`discard` (or a crash) leaves no
    file, apart from a temp file :meth:`FileBlobStore.recover` clears."""

    def __init__(self, name: str, directory_fd: int, unnamed: bool, tag: str) -> None:
        self._name = name
        self._tag = tag
        self._directory = directory_fd
        self._temp: str | None = None
        if unnamed:
            flags = _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
            self._fd = os.open(".", flags, _FILE_MODE, dir_fd=directory_fd)
        else:
            self._temp = self._temp_name()
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            self._fd = os.open(self._temp, flags, _FILE_MODE, dir_fd=directory_fd)

    def _temp_name(self) -> str:
        """Beside the final file (not one shared temp directory: create/delete cycles in one
        directory slow file creation down on some file systems); one per thread, named with
        the node, so that on a shared data dir a node's recovery knows its own."""
        return f".{self._name}.{self._tag}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}"

    def write(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Append ``pieces`` (one ``writev`` for the lot, short writes continued)."""
        pending = [memoryview(piece) for piece in pieces if len(piece)]
        while pending:
            written = os.writev(self._fd, pending)
            while pending and written >= len(pending[0]):
                written -= len(pending.pop(0))
            if written:
                pending[0] = pending[0][written:]

    def commit(self) -> None:
        """Put the blob under its name (replacing what was there), atomically."""
        try:
            if self._temp is None:
                self._link_unnamed()
            else:
                self._rename(self._temp)
        except BaseException:
            self.discard()
            raise
        os.close(self._fd)
        self._fd = -1

    def _link_unnamed(self) -> None:
        """linkat() names the file; over an existing one (a replacement, or a file a crash left
        without its row), through a temp name and rename."""
        try:
            _link_by_fd(self._fd, self._name, self._directory)
            return
        except FileExistsError:
            pass
        temp = self._temp = self._temp_name()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=self._directory)
        _link_by_fd(self._fd, temp, self._directory)
        self._rename(temp)

    def _rename(self, temp: str) -> None:
        os.replace(temp, self._name, src_dir_fd=self._directory, dst_dir_fd=self._directory)
        self._temp = None

    def discard(self) -> None:
        """Give up: no file is left (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp, dir_fd=self._directory)
            self._temp = None


class FileBlobStore:
    """``node``: this node's name on a data dir several nodes share (default: the host's)."""

    def __init__(
        self, data_dir: Path, durability: Durability = "auto", node: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.tag = node_tag(node or os.uname().nodename)
        self.root = self.data_dir / ROOT_NAME
        created = missing_directories(self.root)
        ensure_writable_dir(self.root, "instances directory")
        fsync_created(created)  # instances/ (and a data dir made for it) survive a power cut
        self._file_system = _file_system_sync(self.root, durability)
        self._real_root = os.path.realpath(self.root)
        self._real_directories: dict[str, bool] = {}
        self._data_dir = str(self.data_dir)
        self._directories: dict[Path, int] = {}
        """Open fds of the fan-out directories new blobs go to (256 at most)."""
        self._unnamed = _unnamed_files_work(self.root)

    def name_for(self, sop_instance_uid: str) -> str:
        """Named by the SHA-256 of the UID, never by the UID itself (a peer's UID must not
        choose a path). Fanned out into 256 directories: one huge directory gets slow to
        create files in, while a deeper tree costs a directory creation (and its fsync) per
        early file. Rows written before keep their own name."""
        digest = hashlib.sha256(sop_instance_uid.encode()).hexdigest()
        return f"{ROOT_NAME}/{digest[:2]}/{digest}.dcm"

    def path(self, name: str) -> Path:
        """The file of a blob name (check :meth:`contains` first for names from the index)."""
        return self.data_dir / name

    def path_for(self, sop_instance_uid: str) -> Path:
        return self.data_dir / self.name_for(sop_instance_uid)

    def create(self, name: str) -> FileBlobWriter:
        """A writer for blob ``name``: never a half-written instance under its name."""
        final = self.data_dir / name
        directory = self._directory(final.parent)
        try:
            return FileBlobWriter(final.name, directory, self._unnamed, self.tag)
        except OSError as exc:
            if not self._unnamed or exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            self._unnamed = False  # another file system was mounted there: temp names
            return FileBlobWriter(final.name, directory, False, self.tag)

    def _directory(self, directory: Path) -> int:
        """The fd of a fan-out directory, created and opened on first use."""
        fd = self._directories.get(directory)
        if fd is None:
            directory.mkdir(parents=True, exist_ok=True)
            opened = _open_directory(directory)
            fd = self._directories.setdefault(directory, opened)
            if fd != opened:  # another thread opened it meanwhile
                os.close(opened)
        return fd

    def put(self, name: str, content: bytes) -> None:
        """The whole blob at once (see :meth:`create`)."""
        writer = self.create(name)
        try:
            writer.write([content])
        except BaseException:
            writer.discard()
            raise
        writer.commit()

    def contains(self, name: str) -> bool:
        """Real paths of directories are cached: there are 256 of them, and rows by the
        million. Plain string operations, not pathlib: a commitment asks this of every
        reference (pathlib cost 40 µs each)."""
        parts = name.split("/")
        return (
            not name.startswith("/")
            and ".." not in parts
            and parts[0] == ROOT_NAME
            and self._directory_inside(name.rpartition("/")[0])
        )

    def _directory_inside(self, directory: str) -> bool:
        """Whether the data dir's ``directory`` (relative) resolves inside the store."""
        known = self._real_directories.get(directory)
        if known is None:
            real = os.path.realpath(os.path.join(self._data_dir, directory))
            known = real == self._real_root or real.startswith(self._real_root + os.sep)
            if len(self._real_directories) < _REAL_DIRECTORY_CACHE:
                self._real_directories[directory] = known
        return known

    def locate(self, name: str) -> str:
        return os.path.join(self._data_dir, name)

    def size(self, name: str) -> int:
        return os.stat(os.path.join(self._data_dir, name)).st_size

    def sha256(self, name: str) -> str:
        return sha256_of(os.path.join(self._data_dir, name))

    def open(self, name: str) -> IO[bytes]:
        return open(self.data_dir / name, "rb")

    def sync(self, names: Sequence[str]) -> None:
        """One barrier for all of ``names``: a ``syncfs`` of the store's file system where it
        is trusted, else the files' fsyncs in parallel, then each of their directories once;
        then the store's root and the data dir (new fan-out directories, new databases)."""
        if self._file_system is not None:
            self._file_system.sync()
            fsync_path(self.data_dir)
            return
        files = [self.data_dir / name for name in names]
        directories = dict.fromkeys(path.parent for path in files)
        fsync_files_and_directories(files, [*directories, self.root, self.data_dir])

    def remove(self, name: str) -> None:
        (self.data_dir / name).unlink(missing_ok=True)

    def close(self) -> None:
        for fd in self._directories.values():
            os.close(fd)
        self._directories.clear()
        if self._file_system is not None:
            self._file_system.close()

    def recover(self) -> int:
        """Remove temp files of writes a crash interrupted: this node's, and those of any node
        older than :data:`TEMP_MAX_AGE` (another node's recent one may still be written: on a
        data dir nodes share without ``O_TMPFILE``, NFS, it is left alone). Returns how many."""
        removed = 0
        oldest = time.time() - TEMP_MAX_AGE
        for leftover in self.root.glob(f"*/.*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # its writer finished meanwhile
                if _temp_tag(leftover.name) == self.tag or leftover.stat().st_mtime < oldest:
                    leftover.unlink()
                    removed += 1
        return removed


def _file_system_sync(root: Path, durability: Durability) -> FileSystemSync | None:
    """The ``syncfs`` barrier for ``root`` when ``durability`` allows it and it is trusted
    there; None for the fsync pool. ``syncfs`` asked for where it is not trusted is refused."""
    if durability == "fsync":
        log.info("durability barrier for %s: parallel fsync (configured)", root)
        return None
    untrusted = syncfs_untrusted(root)
    if untrusted is None:
        log.info("durability barrier for %s: syncfs", root)
        return FileSystemSync(root)
    if durability == "syncfs":
        raise OSError(
            errno.ENOTSUP,
            f'durability = "syncfs" cannot be trusted for {root}: {untrusted};'
            ' set durability = "auto" or "fsync"',
        )
    log.info("durability barrier for %s: parallel fsync (syncfs not used: %s)", root, untrusted)
    return None


READ_BLOCK = 64 * 1024
"""Read-back block: below malloc's mmap threshold, so a small file costs one read and no
mmap/munmap (a commitment's checksum policy reads thousands of them)."""


def sha256_of(path: Path | str) -> str:
    """SHA-256 of a file, read unbuffered in blocks (no BufferedReader, no pathlib: ~20 µs for
    a small instance instead of ~60)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        while block := os.read(fd, READ_BLOCK):
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()
