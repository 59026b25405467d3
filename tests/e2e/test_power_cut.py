"""Power cuts (tools/power_cut.py) on the lazy file system (tools/lazyfs.py), bounded: 20 cuts
that drop everything never fsynced, each followed by the invariant checks on what survived,
then the campaign's checks after settling. A missing fsync in a durability barrier fails it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from power_cut import run_power_cuts

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse"), reason="/dev/fuse is absent: no FUSE, no power cuts"
    ),
    pytest.mark.timeout(240),
]


def test_power_cuts_lose_nothing_promised():
    # Not tmp_path: pytest removes old base temp dirs at start, which another pytest session
    # could do under a live mount. Our own dir, removed only once nothing is mounted in it.
    workdir = Path(tempfile.mkdtemp(prefix="stgcmt-power-test-"))
    started = time.monotonic()
    try:
        cuts, summary = run_power_cuts(20, seed=20261201, workdir=workdir, max_seconds=150)
    finally:
        mounted = os.path.ismount(workdir / "mnt")
        if not mounted:
            shutil.rmtree(workdir, ignore_errors=True)
    assert not mounted, "the lazy mount was left behind"
    assert not summary.violations, "\n".join(summary.violations)
    assert cuts >= 20
    assert summary.checks > 20 * 5
    assert summary.dropped > 0, "no cut dropped anything: the lazy file system is not lazy"
    took = time.monotonic() - started
    print(f"{cuts} power cuts, {summary.checks} invariants checked in {took:.0f} s")
