"""``python -m bench``: the benchmark suite of issues 5 and 12, in one command.

It measures stgcmt beside DCMTK and Orthanc on 127.0.0.1 (start-up, ingest, send, commitment
latency with every reference stored, concurrency, Nagle-on clients, one big C-STORE), prints
every row of issue 12's table with its target and met / not met, and writes JSON and a PNG to
``bench/results/``. Speed figures never fail the run: the exit status is 0 unless something
broke (a peer would not start, a transfer failed), then 1; 2 for unusable arguments or missing
tools, 130 on Ctrl-C. Every process it starts is stopped by its PID on the way out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import commitment, deps, nagle, report, scenarios
from .peer import ReferencePeer
from .procs import BenchError, Children
from .scenarios import Bench, Plan, Tools, say
from .servers import PEER_AET

SCENARIOS: list[tuple[str, str, Callable[[Bench], None]]] = [
    ("startup", "start-up", scenarios.startup),
    ("ingest", "ingest", scenarios.ingest),
    ("send", "send", scenarios.send),
    ("commitment", "commitment (stgcmt)", commitment.commitment),
    ("commitment", "commitment (Orthanc)", commitment.orthanc_commitment),
    ("concurrency", "concurrency", scenarios.concurrency),
    ("nagle", "Nagle-on clients", nagle.nagle),
    ("memory", "one big C-STORE", nagle.memory),
]
"""(key for --only, name, function) of every measurement, in order."""

RESULTS = Path(__file__).resolve().parent / "results"


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="stgcmt benchmarks beside DCMTK and Orthanc (issues 5, 12), on 127.0.0.1",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    p.add_argument("--quick", action="store_true", help="short smoke run: small counts, 1 run")
    p.add_argument(
        "--commit-runs",
        type=int,
        default=None,
        metavar="N",
        help="runs per commitment figure (default 2: each stores every referenced instance afresh)",
    )
    p.add_argument(
        "--commit-refs",
        type=_counts,
        metavar="N,N,...",
        help="reference counts of the commitment figures, every one stored (default 10000,100000)",
    )
    p.add_argument(
        "--big-mb",
        type=int,
        default=None,
        metavar="MIB",
        help="pixel data of the one-C-STORE memory figure (default 512)",
    )
    p.add_argument("--no-orthanc", action="store_true", help="leave Orthanc out")
    p.add_argument(
        "--no-uvloop",
        action="store_true",
        help="leave out our SCP on uvloop (measured beside asyncio when installed)",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted({key for key, _, _ in SCENARIOS}),
        help="run only this measurement (repeatable; default all)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (instances, logs)")
    args = p.parse_args(argv)
    for name in ("runs", "commit_runs", "big_mb"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    full = Plan(
        runs=3,
        small=500,
        large=50,
        commit_refs=(10_000, 100_000),
        commit_runs=2,
        mixed=(10_000, 1_000),
        orthanc_refs=(100, 1_000),
        concurrency=(1, 2, 4),
        nagle=100,
        big_mb=512,
        startup=20,
    )
    quick = {"runs": 1, "small": 50, "large": 5, "commit_refs": (100, 1_000), "commit_runs": 1}
    quick |= {"mixed": (1_000, 100), "orthanc_refs": (100,), "concurrency": (1, 2)}
    quick |= {"nagle": 20, "big_mb": 32, "startup": 5}
    plan = replace(full, **quick) if args.quick else full
    uvloop = importlib.util.find_spec("uvloop") is not None and not args.no_uvloop
    changes: dict[str, Any] = {"orthanc": not args.no_orthanc, "uvloop": uvloop}
    for name in ("runs", "commit_runs", "commit_refs", "big_mb"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return replace(plan, **changes)


def stgcmt_command() -> list[str]:
    """The console script a user runs (``.venv/bin/stgcmt``), else ``python -m stgcmt``."""
    script = Path(sys.executable).parent / "stgcmt"
    return [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "stgcmt"]


def find_tools(plan: Plan) -> Tools:
    deps.ensure_matplotlib()
    storescu = deps.ensure_dcmtk("storescu")
    storescp = deps.ensure_dcmtk("storescp")
    orthanc = deps.ensure_command("Orthanc", "orthanc") if plan.orthanc else None
    return Tools(storescu, storescp, orthanc, stgcmt_command())


def _sigterm_as_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def measure(plan: Plan, tools: Tools, workdir: Path, only: list[str] | None) -> Bench:
    """All scenarios, in order; each one that breaks is recorded and skipped."""
    with Children() as children:
        peer = ReferencePeer(PEER_AET).start()
        try:
            bench = Bench(plan, tools, workdir, children, peer)
            for key, name, run in SCENARIOS:
                if only and key not in only:
                    continue
                if "Orthanc" in name and not (plan.orthanc and tools.orthanc):
                    continue
                with scenarios.scenario(bench, name):
                    run(bench)
            return bench
        finally:
            peer.stop()


def _version_of(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "-"


def _versions(tools: Tools) -> dict[str, str]:
    import pydicom
    import pynetdicom

    import stgcmt

    return {
        "python": platform.python_version(),
        "stgcmt": getattr(stgcmt, "__version__", "?"),
        "stgcmt_from": str(Path(stgcmt.__file__).parent),
        "uvloop": _version_of("uvloop"),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "storescu": tools.storescu,
        "orthanc": tools.orthanc or "-",
    }


def document(bench: Bench, argv: list[str], started: float, load_before: tuple) -> dict[str, Any]:
    return {
        "command": "python -m bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "platform": platform.platform(),
        },
        "versions": _versions(bench.tools),
        "plan": bench.plan.__dict__,
        "method": {
            "timing": "every client waited for with a blocking wait() (a watchdog thread kills"
            " it past its deadline); nothing deleted before the end of the run",
            "ingest": "storescu (TCP_NODELAY=1) wall time, one association; ingest+commit adds"
            " an N-ACTION for every instance sent and runs until its report arrives; CPU ="
            " server utime+stime delta (/proc/PID/stat)",
            "send": "stgcmt send into storescp (exits 1: no Storage Commitment there), whole"
            " command and its C-STORE phase (its -v log), vs storescu's whole command",
            "commitment": "reference peer = pynetdicom directly; clock from N-ACTION handed to"
            " the wire (EVT_DIMSE_SENT) to N-EVENT-REPORT reassembled at its listener"
            " (new association); 'all stored': every reference stored just before (untimed)",
            "nagle": "storescu without TCP_NODELAY=1, and pynetdicom, wall time / instances",
            "memory": "server VmHWM after one big C-STORE minus VmHWM before it",
            "ratios": "computed within each run; median (min-max) over runs",
        },
        "summary": report.summarize(bench.results),
        "raw": bench.results,
        "errors": bench.errors,
    }


def write_outputs(out: Path, doc: dict[str, Any], found: list[report.Target]) -> list[Path]:
    from .plot import write_png

    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, png_path = out / f"bench-{stamp}.json", out / f"bench-{stamp}.png"
    report.write_json(json_path, doc, found)
    load = ", ".join(f"{x:.1f}" for x in doc["machine"]["load_before"])
    subtitle = f"{doc['command']} — {doc['started']} — {doc['machine']['cpus']} cpus, load {load}"
    write_png(png_path, doc["summary"], subtitle)
    for latest, path in ((out / "latest.json", json_path), (out / "latest.png", png_path)):
        shutil.copyfile(path, latest)
    return [json_path, png_path]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--cluster" in argv:  # several nodes on PostgreSQL vs one on SQLite: bench/cluster.py
        from .cluster import main as cluster_main

        return cluster_main([a for a in argv if a != "--cluster"])
    if "--dashboard" in argv:  # ingest with the web dashboard polling: bench/dashboard.py
        from .dashboard import main as dashboard_main

        return dashboard_main([a for a in argv if a != "--dashboard"])
    args = parse_args(argv)
    plan = make_plan(args)
    try:
        tools = find_tools(plan)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # Also when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started, load_before = time.time(), os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="stgcmt-bench-"))
    say(f"plan {plan}; work folder {workdir}")
    try:
        bench = measure(plan, tools, workdir, args.only)
    except KeyboardInterrupt:
        print(f"bench: interrupted; every process stopped (work folder {workdir})", file=sys.stderr)
        return 130
    doc = document(bench, argv, started, load_before)
    found = report.targets(doc["summary"])
    print(report.render(doc["summary"], found))
    for path in write_outputs(args.out, doc, found):
        print(f"wrote {path}")
    if bench.errors:
        print("\nSOMETHING BROKE (figures above may be incomplete):", file=sys.stderr)
        for error in bench.errors:
            print(f"  - {error}", file=sys.stderr)
        print(f"logs kept in {workdir}", file=sys.stderr)
        return 1
    if not args.keep:  # only now: deleting between figures would slow the next one down
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
