"""A FUSE file system whose fsync fails with a real EIO from the kernel while an arming file
exists (a dying disk: writes and renames work, the durability barrier does not).

    python tests/support/eio_fs.py MOUNTPOINT ARM_FILE

``ARM_FILE`` lies outside the mount: while it exists, every ``fsync``/``fdatasync`` of a file
and every ``fsync`` of a directory in the mount fails with ``EIO``. It is ``tools/lazyfs.py``
in its ``--eio-while`` mode over a fresh backing directory that is removed at unmount, so the
contents vanish with the mount. Prints ``mounted`` once it is up; stop it with SIGTERM.
Tests mount it with :func:`eio_mount`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))  # run as a script

from lazyfs import LazyFS, serve  # noqa: E402

UNMOUNT_WAIT = 10.0
"""Seconds the file system gets to unmount after SIGTERM before it is killed."""


@contextmanager
def eio_mount(mountpoint: Path, arm: Path) -> Iterator[Path]:
    """This file system mounted at ``mountpoint`` (an empty directory) by its own process,
    unmounted again on leaving; yields ``arm``: touch it and fsync fails."""
    command = [sys.executable, __file__, str(mountpoint), str(arm)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as fs:
        try:
            first = fs.stdout.readline().strip() if fs.stdout else ""
            if first != "mounted" or not os.path.ismount(mountpoint):
                raise RuntimeError(f"eio_fs did not mount {mountpoint}: {first}")
            yield arm
        finally:
            fs.terminate()
            try:
                fs.wait(timeout=UNMOUNT_WAIT)
            except subprocess.TimeoutExpired:
                fs.kill()
            if os.path.ismount(mountpoint):
                subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)


def main() -> int:
    mountpoint, arm = Path(sys.argv[1]), Path(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="eiofs-") as backing:
        return serve(LazyFS(Path(backing), eio_while=arm), mountpoint, "eiofs", "mounted")


if __name__ == "__main__":
    sys.exit(main())
