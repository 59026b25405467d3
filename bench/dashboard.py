"""``python -m bench --dashboard``: what the web dashboard costs DICOM ingest (issue 13).

One ``stgcmt scp --http`` process; each run stores a fresh set of small instances with DCMTK's
``storescu`` (``TCP_NODELAY=1``) twice, in turn: with no browser, then with Debian's Chromium
(driven by Playwright, headless) showing the overview and polling status, peers and timeline
every second. Figures: the wall-time ratio polled / quiet and the SCP process's CPU seconds for
each half (from ``/proc/PID/stat``), min / median / max over the runs. The halves alternate in
one run so that drift on a shared machine hits both; nothing is deleted between figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .deps import ensure_dcmtk
from .dicomdata import make_set
from .procs import BenchError, Children, dcmtk_env, free_port, run_parallel, wait_listening
from .servers import SCU_AET, START_TIMEOUT

RESULTS = Path(__file__).resolve().parent / "results"
TESTS = Path(__file__).resolve().parent.parent / "tests"
AET = "ARCHIVE"
TOKEN = "bench-dashboard-token"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench --dashboard",
        description="ingest with and without the dashboard open and polling every second",
        epilog="example: python -m bench --dashboard --runs 5 --instances 500",
    )
    p.add_argument("--runs", type=int, default=5, help="alternated pairs (default 5)")
    p.add_argument("--instances", type=int, default=500, help="small instances per half")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    return p.parse_args(argv)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_scp(children: Children, workdir: Path) -> tuple[int, int, int]:
    """The archive with its HTTP server; (PID, DICOM port, HTTP port)."""
    port, http_port = free_port(), free_port()
    config = workdir / "archive.toml"
    config.write_text(
        f'[scp]\naet = "{AET}"\nbind = "127.0.0.1"\nport = {port}\n'
        f'data_dir = "{workdir / "data"}"\naccept_unknown = true\n\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\ntoken = "{TOKEN}"\n'
    )
    process = children.start(
        [sys.executable, "-m", "stgcmt", "scp", "--config", str(config)], log=workdir / "scp.log"
    )
    wait_listening(port, process, START_TIMEOUT, "stgcmt scp")
    wait_listening(http_port, process, START_TIMEOUT, "its HTTP server")
    return process.pid, port, http_port


def store(storescu: str, port: int, folder: Path, log: Path) -> float:
    argv = [storescu, "-aet", SCU_AET, "-aec", AET, "+sd", "127.0.0.1", str(port), str(folder)]
    with open(log, "ab") as out:
        seconds, codes = run_parallel([argv], env=dcmtk_env(), timeout=600, log=out)
    if any(codes):
        raise BenchError(f"storescu exited {codes[0]} (log {log})")
    return seconds


def timed(pid: int, storescu: str, port: int, folder: Path, log: Path) -> tuple[float, float]:
    """(wall seconds, SCP CPU seconds) of storing ``folder``."""
    cpu = cpu_seconds(pid)
    wall = store(storescu, port, folder, log)
    return wall, cpu_seconds(pid) - cpu


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, list[float]]:
    sys.path.insert(0, str(TESTS))
    from support.browser import chromium, sign_in  # the browser the dashboard tests use

    storescu = ensure_dcmtk("storescu")
    samples: dict[str, list[float]] = {k: [] for k in ("ratio", "cpu_quiet", "cpu_polled")}
    children = Children()
    try:
        pid, port, http_port = start_scp(children, workdir)
        store(storescu, port, make_set(workdir / "warm", 20, 64).folder, workdir / "scu.log")
        with chromium() as browser:
            for run in range(args.runs):
                quiet = make_set(workdir / f"quiet-{run}", args.instances, 64).folder
                polled = make_set(workdir / f"polled-{run}", args.instances, 64).folder
                wall_q, cpu_q = timed(pid, storescu, port, quiet, workdir / "scu.log")
                page = browser.new_context().new_page()
                sign_in(page, http_port, TOKEN, "?poll=1")
                page.wait_for_selector("#count-instances .n")
                wall_p, cpu_p = timed(pid, storescu, port, polled, workdir / "scu.log")
                page.context.close()
                samples["ratio"].append(wall_p / wall_q)
                samples["cpu_quiet"].append(cpu_q)
                samples["cpu_polled"].append(cpu_p)
                print(
                    f"run {run + 1}/{args.runs}: quiet {wall_q:.2f} s (SCP CPU {cpu_q:.2f} s),"
                    f" polled {wall_p:.2f} s (SCP CPU {cpu_p:.2f} s)",
                    flush=True,
                )
    finally:
        children.stop_all()
    return samples


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stgcmt-bench-dashboard-") as tmp:
        try:
            samples = measure(args, Path(tmp))
        except BenchError as exc:
            print(f"bench --dashboard: {exc}", file=sys.stderr)
            return 1
    results = {name: spread(values) for name, values in samples.items()}
    for name, f in results.items():
        print(f"{name:<12} median {f['median']:.2f} (min {f['min']:.2f}, max {f['max']:.2f})")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document: dict[str, Any] = {
        "command": "python -m bench --dashboard " + " ".join(argv),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "instances": args.instances,
        "results": results,
        "raw": samples,
    }
    out.write_text(json.dumps(document, indent=2))
    print(f"written {out}")
    return 0
