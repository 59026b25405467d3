"""tools/lazyfs.py's dying-disk mode, as tests/support/eio_fs.py mounts it: through the real
kernel, fsync answers EIO while the arming file exists and nothing but the barrier fails; once
the file is gone, fsync works again."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.eio_fs import eio_mount

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="/dev/fuse is absent: no FUSE mount"
)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(mountpoint, arming file) of a mounted eio_fs; nothing left mounted after the test."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with eio_mount(mountpoint, tmp_path / "fsync-fails") as arm:
        yield mountpoint, arm
    assert not os.path.ismount(mountpoint)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fsync_fails_with_eio_only_while_armed(mounted: tuple[Path, Path]) -> None:
    mountpoint, arm = mounted
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
