"""A FUSE file system whose fsync fails with a real EIO from the kernel while an arming file
exists (a dying disk: writes and renames work, the durability barrier does not).

    python tests/support/eio_fs.py MOUNTPOINT ARM_FILE

``ARM_FILE`` lies outside the mount: while it exists, every ``fsync``/``fdatasync`` of a file
and every ``fsync`` of a directory in the mount fails with ``EIO``. It is ``tools/lazyfs.py``
in its ``--eio-while`` mode over a fresh backing directory that is removed at unmount, so the
contents vanish with the mount. Prints ``mounted`` once it is up; stop it with SIGTERM.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))  # run as a script

from lazyfs import LazyFS, serve  # noqa: E402


def main() -> int:
    mountpoint, arm = Path(sys.argv[1]), Path(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="eiofs-") as backing:
        return serve(LazyFS(Path(backing), eio_while=arm), mountpoint, "eiofs", "mounted")


if __name__ == "__main__":
    sys.exit(main())
