"""A long-running ``stgcmt scp`` keeps its open files bounded: what one association opens is
closed when it ends, however many associations come and go (a service runs with a limit of
1,024 descriptors by default; past it, C-STOREs and the index fail)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from support.cluster import Node
from support.common import LOCALHOST, ensure_debian_package, make_dataset, wait_for

ASSOCIATIONS = 30
STREAMED_PIXEL_BYTES = 200_000
"""Past the first 64 KiB a C-STORE is received in the association's own thread (streamed),
and the duplicate check of an instance already held reads the index from there."""


def _index_descriptors(pid: int, data_dir: Path) -> int:
    """How many of the process's open descriptors are the instance index (database, WAL)."""
    index = str(data_dir / "index.sqlite")
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        count += target.startswith(index)
    return count


def _storescu(storescu: str, port: int, path: Path) -> subprocess.CompletedProcess[str]:
    """One association storing ``path``."""
    return subprocess.run(
        [storescu, "-aet", "MODALITY", "-aec", "ARCHIVE", LOCALHOST, str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def test_associations_that_read_the_index_leave_no_descriptor_open(tmp_path: Path):
    storescu = ensure_debian_package("storescu", "dcmtk")
    data_dir = tmp_path / "data"
    args = ["--aet", "ARCHIVE", "--bind", LOCALHOST, "--data-dir", str(data_dir)]
    node = Node("archive", tmp_path, [*args, "--accept-unknown"], dict(os.environ)).start()
    try:
        ds = make_dataset(pixel_bytes=STREAMED_PIXEL_BYTES)
        path = tmp_path / "resent.dcm"
        ds.save_as(path, enforce_file_format=True)
        for _ in range(3):  # stored, then re-sent twice: whatever is opened once is open now
            sent = _storescu(storescu, node.port, path)
            assert sent.returncode == 0, sent.stderr
        assert node.proc is not None
        pid = node.proc.pid
        before = _index_descriptors(pid, data_dir)
        for _ in range(ASSOCIATIONS):
            sent = _storescu(storescu, node.port, path)
            assert sent.returncode == 0, sent.stderr
        assert wait_for(lambda: _index_descriptors(pid, data_dir) <= before + 2, 5), (
            f"index descriptors open: {before} before {ASSOCIATIONS} associations,"
            f" {_index_descriptors(pid, data_dir)} after"
        )
    finally:
        node.kill(signal.SIGTERM)
