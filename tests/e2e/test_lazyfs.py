"""tools/lazyfs.py's dying-disk mode, as tests/support/eio_fs.py mounts it: through the real
kernel, fsync answers EIO while the arming file exists and nothing but the barrier fails; once
the file is gone, fsync works again."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.common import PYTHON

EIO_FS = Path(__file__).parents[1] / "support" / "eio_fs.py"

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="/dev/fuse is absent: no FUSE mount"
)


@pytest.fixture
def eio_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mountpoint, arming file) of a mounted eio_fs, unmounted after the test."""
    mountpoint, arm = tmp_path / "mnt", tmp_path / "fsync-fails"
    mountpoint.mkdir()
    proc = subprocess.Popen(
        [PYTHON, str(EIO_FS), str(mountpoint), str(arm)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "mounted"
        assert os.path.ismount(mountpoint)
        yield mountpoint, arm
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            if os.path.ismount(mountpoint):
                subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)
    assert not os.path.ismount(mountpoint)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fsync_fails_with_eio_only_while_armed(eio_mount: tuple[Path, Path]) -> None:
    mountpoint, arm = eio_mount
    blob = mountpoint / "blob.tmp"
    blob.write_bytes(b"DICM" * 1000)
    _fsync(blob)
    _fsync(mountpoint)

    arm.touch()
    (mountpoint / "second").write_bytes(b"written on a dying disk")
    for synced in (mountpoint / "second", mountpoint):
        with pytest.raises(OSError) as failed:
            _fsync(synced)
        assert failed.value.errno == errno.EIO
    blob.rename(mountpoint / "blob.dcm")  # renames and reads still work
    assert (mountpoint / "blob.dcm").read_bytes() == b"DICM" * 1000
    assert sorted(p.name for p in mountpoint.iterdir()) == ["blob.dcm", "second"]

    arm.unlink()  # the disk recovers
    _fsync(mountpoint / "second")
    _fsync(mountpoint)
