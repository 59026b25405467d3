"""The file :class:`~stgcmt.storage.interfaces.BlobStore`: Part 10 files under
``<data_dir>/instances``, fanned out by the SHA-256 of the instance UID.

A blob's name is its path relative to the data dir (``instances/ab/ab….dcm``), which is what the
index has always held. Names read back from the index are untrusted: one that is absolute,
contains ``..``, is not under ``instances/`` or whose directory resolves outside the store (a
symlink) is refused by :meth:`FileBlobStore.contains` and never opened.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from stgcmt.config import Durability
from stgcmt.storage.fsync import (
    FileSystemSync,
    fsync_files_and_directories,
    fsync_path,
    syncfs_untrusted,
)
from stgcmt.storage.sqlite import ensure_writable_dir

log = logging.getLogger(__name__)

ROOT_NAME = "instances"
_REAL_DIRECTORY_CACHE = 4096


class FileBlobStore:
    def __init__(self, data_dir: Path, durability: Durability = "auto") -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / ROOT_NAME
        ensure_writable_dir(self.root, "instances directory")
        fsync_path(self.data_dir)  # instances/ itself must survive a power cut
        self._file_system = _file_system_sync(self.root, durability)
        self._real_root = os.path.realpath(self.root)
        self._real_directories: dict[Path, bool] = {}
        self._directories: set[Path] = set()

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

    def put(self, name: str, content: bytes) -> None:
        """Temp file beside the final one, then rename: never a half-written instance under
        its real name. (Not one shared temp directory: create/delete cycles in one directory
        slow file creation down on some file systems.)"""
        final = self.data_dir / name
        parent = final.parent
        if parent not in self._directories:
            parent.mkdir(parents=True, exist_ok=True)
            self._directories.add(parent)
        temp = parent / f".{final.name}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            temp.write_bytes(content)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def contains(self, name: str) -> bool:
        """Real paths of directories are cached: there are 256 of them, and rows by the
        million."""
        path = Path(name)
        return (
            not path.is_absolute()
            and ".." not in path.parts
            and path.parts[:1] == (ROOT_NAME,)
            and self._directory_inside((self.data_dir / path).parent)
        )

    def _directory_inside(self, directory: Path) -> bool:
        known = self._real_directories.get(directory)
        if known is None:
            real = os.path.realpath(directory)
            known = real == self._real_root or real.startswith(self._real_root + os.sep)
            if len(self._real_directories) < _REAL_DIRECTORY_CACHE:
                self._real_directories[directory] = known
        return known

    def locate(self, name: str) -> str:
        return str(self.data_dir / name)

    def size(self, name: str) -> int:
        return (self.data_dir / name).stat().st_size

    def sha256(self, name: str) -> str:
        return sha256_of(self.data_dir / name)

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
        if self._file_system is not None:
            self._file_system.close()

    def recover(self) -> int:
        """Remove temp files of writes a crash interrupted."""
        removed = 0
        for leftover in self.root.glob("*/.*.part"):
            leftover.unlink(missing_ok=True)
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
