"""Commitment of N references with **every** one stored: the durability barrier's figure.

For each count: a fresh SCP process with a fresh data directory (nothing is ever deleted
between figures: fresh directories instead), ``count`` new ~5 KB instances stored by DCMTK's
``/usr/bin/storescu`` (untimed), then the clock runs from the N-ACTION on the wire to the
N-EVENT-REPORT at the reference peer (:class:`bench.peer.ReferencePeer`), and the SCP's peak
RSS (VmHWM) is read. ``wait`` seconds between the last C-STORE and the N-ACTION (default 0:
the request right after the C-STOREs, the hardest case for the barrier).

    .venv/bin/python -m bench.commitment_stored --refs 10000 100000
    .venv/bin/python -m bench.commitment_stored --refs 10000 --durability fsync
    PYTHONPATH=/tmp/old/src .venv/bin/python -m bench.commitment_stored --refs 10000  # before

The scenario is :func:`commitment_stored`; the bench suite can call it with its own
:class:`~bench.procs.Children` and folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from pydicom.uid import generate_uid

from .dicomdata import SMALL_SIDE, make_set
from .peer import ReferencePeer
from .procs import (
    LOCALHOST,
    BenchError,
    Children,
    dcmtk_env,
    free_port,
    peak_rss_mb,
    run_timed,
    wait_listening,
)
from .servers import PEER_AET, SCU_AET

STORESCU = "/usr/bin/storescu"
"""DCMTK's, by absolute path: with the venv active ``storescu`` is pynetdicom's script."""
SCP_AET = "STGCMT_SCP"
TIMEOUT = 900.0


def _scp_toml(data_dir: Path, port: int, peer_port: int, durability: str | None) -> str:
    """Shipped defaults (checksum policy, report on a new association), our AEs only."""
    extra = f'durability = "{durability}"\n' if durability else ""
    return (
        f'[scp]\naet = "{SCP_AET}"\nbind = "{LOCALHOST}"\nport = {port}\n'
        f'data_dir = "{data_dir}"\n{extra}\n'
        f'[[remote]]\naet = "{SCU_AET}"\nhost = "{LOCALHOST}"\nport = {free_port()}\n\n'
        f'[[remote]]\naet = "{PEER_AET}"\nhost = "{LOCALHOST}"\nport = {peer_port}\n'
    )


def _start_scp(
    children: Children, workdir: Path, peer_port: int, durability: str | None
) -> tuple[int, int]:
    """(port, pid) of a new ``python -m stgcmt scp`` on a fresh data directory."""
    workdir.mkdir(parents=True)
    port = free_port()
    config = workdir / "scp.toml"
    config.write_text(_scp_toml(workdir / "data", port, peer_port, durability))
    argv = [sys.executable, "-m", "stgcmt", "scp", "--config", str(config)]
    process = children.start(argv, log=workdir / "scp.log")
    wait_listening(port, process, 60.0, "stgcmt scp")
    return port, process.pid


def _store(folder: Path, port: int, log: Path) -> float:
    """Every file of ``folder`` on one storescu association; seconds taken."""
    argv = [STORESCU, "-aet", SCU_AET, "-aec", SCP_AET, "+sd", LOCALHOST, str(port), str(folder)]
    with open(log, "ab") as out:
        seconds, code = run_timed(argv, env=dcmtk_env(), timeout=TIMEOUT, log=out)
    if code != 0:
        raise BenchError(f"storescu exited {code} (log {log})")
    return seconds


def commitment_stored(
    children: Children,
    folder: Path,
    counts: list[int],
    *,
    durability: str | None = None,
    wait: float = 0.0,
) -> list[dict[str, float | int | str | None]]:
    """One figure per count (see the module's docstring); each in folders of its own."""
    peer = ReferencePeer(PEER_AET, timeout=TIMEOUT).start()
    figures: list[dict[str, float | int | str | None]] = []
    try:
        for count in counts:
            workdir = folder / f"stored-{count}-{time.time_ns()}"
            port, pid = _start_scp(children, workdir / "scp", peer.port, durability)
            instances = make_set(workdir / "instances", count, SMALL_SIDE)
            store_s = _store(instances.folder, port, workdir / "storescu.log")
            time.sleep(wait)
            report = peer.request(port, SCP_AET, generate_uid(), list(instances.refs))
            if report.committed != count or report.failed:
                raise BenchError(f"{report.committed} committed, {report.failed} failed")
            figures.append(
                {
                    "references": count,
                    "durability": durability or "default",
                    "store_s": round(store_s, 3),
                    "commitment_s": round(report.latency_s, 3),
                    "scp_peak_rss_mb": peak_rss_mb(pid),
                }
            )
            print(json.dumps(figures[-1]), flush=True)
    finally:
        peer.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--durability", choices=("auto", "syncfs", "fsync"))
    parser.add_argument("--wait", type=float, default=0.0, help="seconds before the N-ACTION")
    parser.add_argument("--workdir", type=Path, help="default: a new folder under /var/tmp")
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="stgcmt-commitment-", dir="/var/tmp"))
    with Children() as children:
        commitment_stored(children, folder, args.refs, durability=args.durability, wait=args.wait)
    print(f"folders kept under {folder} (delete them after the run, not between figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
