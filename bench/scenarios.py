"""The measurements of issue 12. Each appends raw samples (seconds, counts, bytes) to
``Bench.results``; medians, spreads and ratios are computed afterwards in :mod:`bench.report`,
so the JSON keeps every sample.

Within a run the servers are measured one after the other on the same fresh instance set (the
order rotating from run to run), so each ratio compares figures taken moments apart on the
same (shared, noisy) machine. Nothing is deleted until the run is over: every figure gets
fresh folders instead.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from .dicomdata import LARGE_SIDE, SMALL_SIDE, InstanceSet, make_set
from .peer import ReferencePeer
from .procs import (
    LOCALHOST,
    BenchError,
    Children,
    cpu_seconds,
    dcmtk_env,
    run_parallel,
    run_timed,
)
from .servers import SCU_AET, Orthanc, Server, count_files, start_orthanc, start_our_scp
from .servers import start_storescp as _start_storescp

CLIENT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Plan:
    """What to measure; ``--quick`` shrinks every dimension for a smoke run."""

    runs: int
    small: int
    large: int
    commit_refs: tuple[int, ...]
    commit_runs: int
    """Runs of each commitment figure (each stores every reference afresh: 100,000 instances
    take minutes)."""
    mixed: tuple[int, int]
    """(references, of which stored) of the mixed commitment figure."""
    orthanc_refs: tuple[int, ...]
    concurrency: tuple[int, ...]
    nagle: int
    """Instances per Nagle-on client run."""
    big_mb: int
    """MiB of pixel data in the one-C-STORE memory figure."""
    startup: int
    """``--version`` runs of the start-up figure."""
    orthanc: bool = True
    uvloop: bool = False
    """Measure our SCP on uvloop beside the stdlib loop (ingest, concurrency)."""

    def sizes(self) -> dict[str, tuple[int, int]]:
        """size name: (instances, image side)."""
        return {"small": (self.small, SMALL_SIDE), "large": (self.large, LARGE_SIDE)}

    def ours(self) -> list[str]:
        """Our SCP's variants to measure (see :data:`bench.servers.LOOPS`)."""
        return ["stgcmt", "stgcmt+uvloop"] if self.uvloop else ["stgcmt"]


@dataclass
class Tools:
    storescu: str
    storescp: str
    orthanc: str | None
    stgcmt: list[str]
    """How to run the stgcmt command (the venv's console script)."""


@dataclass
class Bench:
    """State of one benchmark run."""

    plan: Plan
    tools: Tools
    workdir: Path
    children: Children
    peer: ReferencePeer
    results: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _counter: int = 0

    def folder(self, name: str) -> Path:
        """A new, unique folder under the work directory."""
        self._counter += 1
        return self.workdir / f"{self._counter:04d}-{name}"

    def new_set(self, name: str, count: int, side: int) -> InstanceSet:
        return make_set(self.folder(name), count, side)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start_scp(self, name: str, what: str) -> Server:
        return start_our_scp(self.children, self.folder(f"{what}-{name}"), self.peer.port, name)

    def start_storescp(self, what: str, *, nagle: bool = False) -> Server:
        folder = self.folder(f"{what}-storescp")
        return _start_storescp(self.children, self.tools.storescp, folder, nagle=nagle)


def say(message: str) -> None:
    """Progress on stderr, so that a long run shows it is alive."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def samples(tree: dict[str, Any], *keys: str) -> list[Any]:
    """The list at ``tree[k1][k2]...``, created on first use."""
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    return tree.setdefault(keys[-1], [])


def rotated(items: list[Any], run: int) -> list[Any]:
    """``items`` starting at ``run``: who goes first changes from run to run, so a drift of
    the machine's load does not always favour the same server."""
    k = run % len(items) if items else 0
    return items[k:] + items[:k]


@contextmanager
def scenario(bench: Bench, name: str) -> Iterator[None]:
    """A scenario that breaks is recorded and the run goes on with the next one: one broken
    peer should not cost the figures of the others."""
    say(f"{name} ...")
    start = time.monotonic()
    try:
        yield
    except (BenchError, OSError, TimeoutError) as exc:
        bench.errors.append(f"{name}: {exc}")
        say(f"{name} BROKE: {exc}")
    except Exception as exc:  # anything unforeseen: recorded, the next scenario still runs
        bench.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        say(f"{name} BROKE: {type(exc).__name__}: {exc}")
    else:
        say(f"{name} done in {time.monotonic() - start:.0f} s")


@contextmanager
def servers_running(bench: Bench, servers: list[Server]) -> Iterator[list[Server]]:
    """Stop every server of a scenario on the way out."""
    try:
        yield servers
    finally:
        for server in servers:
            bench.children.stop(server.process)


# -- clients -------------------------------------------------------------------------------------


def storescu_argv(bench: Bench, server: Server, folder: Path) -> list[str]:
    """One association, every file of the folder."""
    return [
        bench.tools.storescu,
        "-aet",
        SCU_AET,
        "-aec",
        server.aet,
        "+sd",
        LOCALHOST,
        str(server.port),
        str(folder),
    ]


def storescu(
    bench: Bench, server: Server, instances: InstanceSet, env: dict[str, str] | None = None
) -> float:
    """Seconds for storescu (``TCP_NODELAY=1`` unless ``env`` says otherwise) to send the set;
    a failure, or storescp not holding every file afterwards, is an error, not a figure."""
    before = _received(server)
    with open(bench.log("storescu"), "ab") as log:
        seconds, code = run_timed(
            storescu_argv(bench, server, instances.folder),
            env=env or dcmtk_env(),
            timeout=CLIENT_TIMEOUT,
            log=log,
        )
    if code != 0:
        raise BenchError(f"storescu into {server.name} exited {code} (log {bench.log('storescu')})")
    _check_received(server, before, instances.count)
    return seconds


def _received(server: Server) -> int | None:
    return count_files(server.workdir / "out") if server.name == "storescp" else None


def _check_received(server: Server, before: int | None, count: int) -> None:
    if before is not None:
        got = count_files(server.workdir / "out") - before
        if got != count:
            raise BenchError(f"{server.name} wrote {got} files, expected {count}")


def commit(bench: Bench, server: Server, refs: list[Any], expect_committed: int) -> Any:
    """One commitment request from the reference peer; checks the report says what was
    stored is committed and the rest failed."""
    uid = generate_uid()
    report = bench.peer.request(server.port, server.aet, uid, refs)
    expected_failed = len(refs) - expect_committed
    if report.committed != expect_committed or report.failed != expected_failed:
        raise BenchError(
            f"report from {server.name}: {report.committed} committed, {report.failed} failed;"
            f" expected {expect_committed} and {expected_failed}"
        )
    return report, uid


# -- ingest --------------------------------------------------------------------------------------


def ingest(bench: Bench) -> None:
    """storescu (one association) into our SCP, storescp and Orthanc; for ours also the
    commitment of every instance sent, until its report has arrived; the servers' CPU time."""
    plan = bench.plan
    servers = [bench.start_scp(name, "ingest") for name in plan.ours()]
    servers.append(bench.start_storescp("ingest"))
    if plan.orthanc and bench.tools.orthanc:
        folder = bench.folder("ingest-orthanc")
        servers.append(start_orthanc(bench.children, bench.tools.orthanc, folder, bench.peer.port))
    with servers_running(bench, servers):
        for run in range(plan.runs):
            for size, (count, side) in plan.sizes().items():
                instances = bench.new_set(f"ingest-{size}", count, side)
                for server in rotated(servers, run):
                    _ingest_one(bench, server, size, instances)
                say(f"ingest run {run + 1}/{plan.runs} {size}: {_last_ingest(bench, size)}")


def _ingest_one(bench: Bench, server: Server, size: str, instances: InstanceSet) -> None:
    cpu_before = cpu_seconds(server.process.pid)
    start = time.perf_counter()
    seconds = storescu(bench, server, instances)
    sample: dict[str, Any] = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds(server.process.pid) - cpu_before,
        "instances": instances.count,
        "bytes": instances.total_bytes,
    }
    if server.name.startswith("stgcmt"):
        report, _ = commit(bench, server, list(instances.refs), instances.count)
        sample["commit_seconds"] = report.latency_s
        sample["ingest_commit_seconds"] = report.received_at - start
    elif isinstance(server, Orthanc):
        sample["orthanc_instances_total"] = server.instance_count()
    samples(bench.results, "ingest", size, server.name).append(sample)


def _last_ingest(bench: Bench, size: str) -> str:
    parts = []
    for name, runs in bench.results["ingest"][size].items():
        last = runs[-1]
        parts.append(f"{name} {last['instances'] / last['seconds']:.0f}/s")
    return ", ".join(parts)


# -- send ----------------------------------------------------------------------------------------


def send(bench: Bench) -> None:
    """``stgcmt send`` against storescp (which rejects Storage Commitment, so send exits 1
    right after storing) vs storescu into the same storescp: whole commands, and send's
    C-STORE phase from its own log."""
    plan = bench.plan
    with servers_running(bench, [bench.start_storescp("send")]) as (dcmtk,):
        for run in range(plan.runs):
            for size, (count, side) in plan.sizes().items():
                for client in rotated([_send_storescu, _send_stgcmt], run):
                    # one set each: storescp names its files by UID, a repeat would overwrite
                    client(bench, dcmtk, size, bench.new_set(f"send-{size}", count, side))
            say(f"send run {run + 1}/{plan.runs} done")


def _send_storescu(bench: Bench, dcmtk: Server, size: str, instances: InstanceSet) -> None:
    seconds = storescu(bench, dcmtk, instances)
    sample = {"seconds": seconds, "instances": instances.count, "bytes": instances.total_bytes}
    samples(bench.results, "send", size, "storescu").append(sample)


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float | None:
    """The epoch time of a stgcmt log line (millisecond resolution), None if it has none."""
    match = _LOG_TIME.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def cstore_phase(log_text: str) -> float | None:
    """Seconds from stgcmt send's "N files in M transactions" line (files scanned, journal
    written, association not yet opened) to its last "C-STORE" line (-v), from its own log
    timestamps (millisecond resolution)."""
    start = end = None
    for line in log_text.splitlines():
        if start is None and " files in " in line and " transactions for " in line:
            start = log_time(line)
        elif start is not None and "C-STORE " in line:
            end = log_time(line) or end
    return None if start is None or end is None else end - start


def _send_stgcmt(bench: Bench, dcmtk: Server, size: str, instances: InstanceSet) -> None:
    journal = bench.folder("send-journal") / "journal.sqlite"
    journal.parent.mkdir()
    argv = [
        *bench.tools.stgcmt,
        "send",
        f"{dcmtk.aet}@{LOCALHOST}:{dcmtk.port}",
        str(instances.folder),
        "--aet",
        SCU_AET,
        "--json",
        "--journal",
        str(journal),
        "--timeout",
        "30",
        "-v",
    ]
    log_path = journal.parent / "send.log"
    before = _received(dcmtk)
    with open(log_path, "wb") as log:
        seconds, code = run_timed(argv, timeout=CLIENT_TIMEOUT, log=log)
    if code != 1:  # 1: stored, then Storage Commitment rejected by storescp (as expected)
        raise BenchError(f"stgcmt send exited {code}, expected 1; see {log_path}")
    _check_received(dcmtk, before, instances.count)
    sample = {
        "seconds": seconds,
        "cstore_phase_seconds": cstore_phase(log_path.read_text(errors="replace")),
        "instances": instances.count,
        "bytes": instances.total_bytes,
    }
    samples(bench.results, "send", size, "stgcmt").append(sample)


def startup(bench: Bench) -> None:
    """Wall time of ``stgcmt --version`` (the console script a user runs), each a blocking
    wait, beside ``storescu --version``."""
    commands = {"stgcmt": [*bench.tools.stgcmt, "--version"]}
    commands["storescu"] = [bench.tools.storescu, "--version"]
    for _ in range(bench.plan.startup):
        for name, argv in commands.items():
            seconds, code = run_timed(argv, timeout=120, env=dcmtk_env())
            if code != 0:
                raise BenchError(f"{' '.join(argv)} exited {code}")
            samples(bench.results, "startup", name).append({"seconds": seconds})


# -- concurrency ---------------------------------------------------------------------------------


def concurrency(bench: Bench) -> None:
    """1, 2, 4 storescu associations at once into one server (ours, and storescp, which
    takes them one after the other); total instances/s and the server's CPU time."""
    plan = bench.plan
    servers = [bench.start_scp(name, "concurrency") for name in plan.ours()]
    servers.append(bench.start_storescp("concurrency"))
    with servers_running(bench, servers):
        for run in range(plan.runs):
            for level in plan.concurrency:
                sets = [
                    bench.new_set(f"conc-{level}-{i}", plan.small, SMALL_SIDE) for i in range(level)
                ]
                for server in rotated(servers, run):
                    _concurrent_one(bench, server, sets)
            say(f"concurrency run {run + 1}/{plan.runs} done")
        for server in servers:
            samples(bench.results, "concurrency_rss_mb", server.name).append(server.peak_rss_mb())


def _concurrent_one(bench: Bench, server: Server, sets: list[InstanceSet]) -> None:
    argvs = [storescu_argv(bench, server, s.folder) for s in sets]
    total = sum(s.count for s in sets)
    before, cpu_before = _received(server), cpu_seconds(server.process.pid)
    with open(bench.log("storescu"), "ab") as log:
        seconds, codes = run_parallel(argvs, env=dcmtk_env(), timeout=CLIENT_TIMEOUT, log=log)
    if any(codes):
        raise BenchError(f"concurrent storescu into {server.name} exited {codes}")
    _check_received(server, before, total)
    sample = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds(server.process.pid) - cpu_before,
        "instances": total,
        "associations": len(sets),
    }
    samples(bench.results, "concurrency", server.name, str(len(sets))).append(sample)
