"""A client that leaves Nagle's algorithm on (Debian's storescu without ``TCP_NODELAY=1``,
as most modalities behave) holds each data set PDU until we have acknowledged its command
PDU; with delayed ACKs that is ~40 ms per instance. Our SCP acknowledges at once
(``stgcmt.ul.sockets``: ``TCP_QUICKACK`` re-armed after every read), so such a client sends
50 instances in well under a second, where it takes more than two without it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from support.common import LOCALHOST, remote, write_instances
from support.interop import SCP_AET, Dcmtk

STORESCU_AET = "STORESCU"
COUNT = 50
LIMIT_S = 1.0
"""50 x 40 ms of delayed ACKs is 2 s; sending 50 small instances takes ~0.1 s otherwise, so
the limit leaves a loaded 2-core machine 10x headroom."""


def _nagle_env() -> dict[str, str]:
    """DCMTK as Debian ships it: no TCP_NODELAY in the environment, Nagle on."""
    return {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


def test_nagle_on_storescu_is_not_held_by_delayed_acks(
    dcmtk: Dcmtk, scp_factory, tmp_path: Path
) -> None:
    scp = scp_factory(aet=SCP_AET, remotes=(remote(STORESCU_AET, 104),))
    outbox = tmp_path / "outbox"
    write_instances(outbox, COUNT)
    argv = [dcmtk.storescu, "-aet", STORESCU_AET, "-aec", SCP_AET, "+sd"]
    argv += [LOCALHOST, str(scp.port), str(outbox)]

    start = time.perf_counter()
    process = subprocess.Popen(
        argv, env=_nagle_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.perf_counter() - start

    assert process.returncode == 0, output.decode(errors="replace")
    assert scp.store.count() == COUNT
    assert seconds < LIMIT_S, f"{COUNT} instances took {seconds:.2f} s with Nagle on"
