"""``python -m bench``: the benchmark suite of issue 5, in one command.

It measures stgcmt beside DCMTK and Orthanc on 127.0.0.1 (ingest, send, commitment latency,
concurrency), prints a table with the issue's targets, and writes JSON and a PNG to
``bench/results/``. Speed figures never fail the run: the exit status is 0 unless something
broke (a peer would not start, a transfer failed), then 1; 2 for unusable arguments or missing
tools, 130 on Ctrl-C. Every process it starts is stopped by its PID on the way out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import deps, report, scenarios
from .peer import ReferencePeer
from .procs import BenchError, Children
from .scenarios import Bench, Plan, Tools, say
from .servers import PEER_AET

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
        description="stgcmt benchmarks beside DCMTK and Orthanc (issue 5), on 127.0.0.1",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per figure, medians (default 3)")
    p.add_argument("--quick", action="store_true", help="short smoke run: small counts, 1 run")
    p.add_argument(
        "--commit-stored",
        type=int,
        default=None,
        metavar="K",
        help="instances really stored per commitment request; further references name missing"
        " instances (default 1000, --quick 100)",
    )
    p.add_argument(
        "--commit-refs",
        type=_counts,
        metavar="N,N,...",
        help="reference counts for our SCP (default 100,1000,10000,100000)",
    )
    p.add_argument("--no-orthanc", action="store_true", help="leave Orthanc out")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted({key for key, _, _ in scenarios.SCENARIOS}),
        help="run only this measurement (repeatable; default all)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (instances, logs)")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        plan = Plan(1, 100, 10, (100, 1_000), (100,), 100, (1, 2))
    else:
        plan = Plan(3, 500, 50, (100, 1_000, 10_000, 100_000), (100, 1_000, 2_000), 1000, (1, 2, 4))
    changes: dict[str, Any] = {"orthanc": not args.no_orthanc}
    if args.runs is not None:
        changes["runs"] = args.runs
    if args.commit_refs is not None:
        changes["commit_refs"] = args.commit_refs
    if args.commit_stored is not None:
        changes["commit_stored"] = max(0, args.commit_stored)
    return Plan(**{**plan.__dict__, **changes})


def find_tools(plan: Plan) -> Tools:
    deps.ensure_matplotlib()
    storescu = deps.ensure_dcmtk("storescu")
    storescp = deps.ensure_dcmtk("storescp")
    orthanc = deps.ensure_command("Orthanc", "orthanc") if plan.orthanc else None
    return Tools(storescu, storescp, orthanc)


def _sigterm_as_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def measure(plan: Plan, tools: Tools, workdir: Path, only: list[str] | None) -> Bench:
    """All scenarios, in order; each one that breaks is recorded and skipped."""
    with Children() as children:
        peer = ReferencePeer(PEER_AET).start()
        try:
            bench = Bench(plan, tools, workdir, children, peer)
            for key, name, run in scenarios.SCENARIOS:
                if only and key not in only:
                    continue
                if "Orthanc" in name and not (plan.orthanc and tools.orthanc):
                    continue
                with scenarios.scenario(bench, name):
                    run(bench)
            return bench
        finally:
            peer.stop()


def _versions(tools: Tools) -> dict[str, str]:
    import pydicom
    import pynetdicom

    import stgcmt

    return {
        "python": platform.python_version(),
        "stgcmt": getattr(stgcmt, "__version__", "?"),
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
            "ingest": "storescu (TCP_NODELAY=1) wall time, one association; ingest+commit adds"
            " an N-ACTION for every instance sent and runs until its report arrives",
            "send": "stgcmt send into storescp (exits 1: no Storage Commitment there) minus the"
            " median start-up of 'python -m stgcmt --version'; storescu wall time",
            "commitment": "reference peer = pynetdicom directly; clock from N-ACTION handed to"
            " the wire (EVT_DIMSE_SENT) to N-EVENT-REPORT reassembled at its listener"
            " (new association)",
            "ratios": "computed within each run, median over runs",
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
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
