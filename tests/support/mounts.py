"""Real file systems for the tests: a small tmpfs that fills up, read-only mounts. We run as
root, so permission bits stop nothing; a mount does. Where mounting is not permitted the test
is skipped only when we are not root (as root a failed mount is a failure, never a silent
skip)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode == 0:
        return
    reason = f"mount {' '.join(args)} failed: {result.stderr.strip() or result.returncode}"
    if os.geteuid() != 0:
        pytest.skip(f"{reason} (needs root)")
    pytest.fail(reason)


def unmount(where: Path) -> None:
    """Unmount, lazily if something still holds a file there (never leave a mount behind)."""
    if subprocess.run(["umount", str(where)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``: a real 'No space left on device' once full."""
    where.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    try:
        yield where
    finally:
        unmount(where)


@contextmanager
def read_only_mount(where: Path, prepare: Callable[[Path], object] | None = None) -> Iterator[Path]:
    """A tmpfs at ``where``, filled by ``prepare`` while writable, then remounted read-only."""
    with tmpfs(where):
        if prepare is not None:
            prepare(where)
        mount("-o", "remount,ro", str(where))
        yield where


@contextmanager
def read_only_file(path: Path) -> Iterator[Path]:
    """Bind-mount ``path`` read-only over itself: the directory stays writable."""
    mount("--bind", str(path), str(path))
    try:
        mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        unmount(path)


def fill_up(path: Path) -> None:
    """Write ``path`` until its file system has no block left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 1:
                    return
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
