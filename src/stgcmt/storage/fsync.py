"""fsync helpers: the one place that knows how to push a file or a directory to stable storage.

A rename or a new file is durable only once its directory is synced too, so callers sync the
file, then every directory whose entries changed (the store's barrier, the SCU's move)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def fsync_path(path: Path | str) -> None:
    """fsync a file or a directory by path (a directory is opened read-only, which POSIX
    allows and Linux needs for fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files_and_directories(files: Iterable[Path], directories: Iterable[Path]) -> None:
    """fsync every file, then every directory: the order a crash-safe barrier needs."""
    for path in files:
        fsync_path(path)
    for directory in directories:
        fsync_path(directory)
