"""The four measurements of issue 5. Each appends raw samples (seconds, counts, bytes) to
``Bench.results``; medians and ratios are computed afterwards in :mod:`bench.report`, so the
JSON keeps every sample.

Within a run the servers are measured one after the other on the same fresh instance set, so
each ratio compares figures taken moments apart on the same (shared, noisy) machine.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from .dicomdata import LARGE_SIDE, SMALL_SIDE, InstanceSet, make_set, missing_refs
from .peer import ReferencePeer
from .procs import LOCALHOST, BenchError, Children, dcmtk_env, run_parallel, run_timed
from .servers import (
    SCU_AET,
    Orthanc,
    Server,
    clear_folder,
    start_orthanc,
    start_our_scp,
    start_storescp,
)

CLIENT_TIMEOUT = 600.0
STARTUP_SAMPLES = 5


@dataclass(frozen=True)
class Plan:
    """What to measure; ``--quick`` shrinks every dimension for a smoke run."""

    runs: int
    small: int
    large: int
    commit_refs: tuple[int, ...]
    orthanc_refs: tuple[int, ...]
    commit_stored: int
    concurrency: tuple[int, ...]
    orthanc: bool = True

    def sizes(self) -> dict[str, tuple[int, int]]:
        """size name: (instances, image side)."""
        return {"small": (self.small, SMALL_SIDE), "large": (self.large, LARGE_SIDE)}


@dataclass
class Tools:
    storescu: str
    storescp: str
    orthanc: str | None


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


def say(message: str) -> None:
    """Progress on stderr, so that a long run shows it is alive."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def samples(tree: dict[str, Any], *keys: str) -> list[Any]:
    """The list at ``tree[k1][k2]...``, created on first use."""
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    return tree.setdefault(keys[-1], [])


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
    except Exception as exc:  # subprocess.TimeoutExpired and anything unforeseen
        bench.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        say(f"{name} BROKE: {type(exc).__name__}: {exc}")
    else:
        say(f"{name} done in {time.monotonic() - start:.0f} s")


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


def storescu(bench: Bench, server: Server, folder: Path) -> float:
    """Seconds for storescu to send the folder; a failure is an error, not a figure."""
    with open(bench.log("storescu"), "ab") as log:
        seconds, code = run_timed(
            storescu_argv(bench, server, folder),
            env=dcmtk_env(),
            timeout=CLIENT_TIMEOUT,
            log=log,
        )
    if code != 0:
        raise BenchError(f"storescu into {server.name} exited {code} (log {bench.log('storescu')})")
    return seconds


def commit(
    bench: Bench,
    server: Server,
    refs: list[Any],
    expect_committed: int,
    transaction_uid: str | None = None,
) -> Any:
    """One commitment request from the reference peer; checks the report says what was
    stored is committed and the rest failed."""
    uid = transaction_uid or generate_uid()
    report = bench.peer.request(server.port, server.aet, uid, refs)
    expected_failed = len(refs) - expect_committed
    if report.committed != expect_committed or report.failed != expected_failed:
        raise BenchError(
            f"report from {server.name}: {report.committed} committed, {report.failed} failed;"
            f" expected {expect_committed} and {expected_failed}"
        )
    return report


# -- 1. ingest -----------------------------------------------------------------------------------


def ingest(bench: Bench) -> None:
    """storescu (one association) into our SCP, storescp and Orthanc; for ours also the
    commitment barrier that makes the C-STOREs durable."""
    plan = bench.plan
    servers: list[Server] = [
        start_our_scp(bench.children, bench.folder("ingest-scp"), bench.peer.port)
    ]
    dcmtk = start_storescp(bench.children, bench.tools.storescp, bench.folder("ingest-storescp"))
    servers.append(dcmtk)
    if plan.orthanc and bench.tools.orthanc:
        ortho = start_orthanc(
            bench.children, bench.tools.orthanc, bench.folder("ingest-orthanc"), bench.peer.port
        )
        servers.append(ortho)
    try:
        for run in range(plan.runs):
            for size, (count, side) in plan.sizes().items():
                instances = bench.new_set(f"ingest-{size}", count, side)
                for server in servers:
                    _ingest_one(bench, server, size, instances)
                say(f"ingest run {run + 1}/{plan.runs} {size}: {_last_ingest(bench, size)}")
        for server in servers:
            samples(bench.results, "ingest_rss_mb", server.name).append(server.peak_rss_mb())
    finally:
        for server in servers:
            bench.children.stop(server.process)


def _association_cost(bench: Bench, server: Server) -> float:
    """storescu with one small instance: start-up, association (storescu proposes 100+
    presentation contexts), one C-STORE, release. Shown beside the throughput, which it is
    part of: with 500 instances it is a visible share of storescp's wall time."""
    one = bench.new_set("one", 1, SMALL_SIDE)
    seconds = storescu(bench, server, one.folder)
    if server.name == "storescp":
        clear_folder(server.workdir / "out")
    return seconds


def _ingest_one(bench: Bench, server: Server, size: str, instances: InstanceSet) -> None:
    setup = _association_cost(bench, server)
    start = time.perf_counter()
    seconds = storescu(bench, server, instances.folder)
    sample: dict[str, Any] = {
        "seconds": seconds,
        "one_instance_seconds": setup,
        "instances": instances.count,
        "bytes": instances.total_bytes,
    }
    if server.name == "stgcmt":
        report = commit(bench, server, list(instances.refs), instances.count)
        sample["commit_seconds"] = report.latency_s
        sample["ingest_commit_seconds"] = report.received_at - start
    elif server.name == "storescp":
        got = clear_folder(server.workdir / "out")
        if got != instances.count:
            raise BenchError(f"storescp wrote {got} files, expected {instances.count}")
    elif isinstance(server, Orthanc):
        sample["orthanc_instances_total"] = server.instance_count()
    samples(bench.results, "ingest", size, server.name).append(sample)


def _last_ingest(bench: Bench, size: str) -> str:
    parts = []
    for name, runs in bench.results["ingest"][size].items():
        last = runs[-1]
        parts.append(f"{name} {last['instances'] / last['seconds']:.0f}/s")
    return ", ".join(parts)


# -- 2. send -------------------------------------------------------------------------------------


def send(bench: Bench) -> None:
    """``stgcmt send`` against storescp (which rejects Storage Commitment, so send exits 1
    right after storing) vs storescu into the same storescp; the Python start-up of
    ``stgcmt`` is measured separately with ``--version`` and subtracted."""
    plan = bench.plan
    dcmtk = start_storescp(bench.children, bench.tools.storescp, bench.folder("send-storescp"))
    out = dcmtk.workdir / "out"
    try:
        for run in range(plan.runs):
            for size, (count, side) in plan.sizes().items():
                instances = bench.new_set(f"send-{size}", count, side)
                _send_storescu(bench, dcmtk, size, instances)
                _send_stgcmt(bench, dcmtk, size, instances)
                clear_folder(out)
            say(f"send run {run + 1}/{plan.runs} done")
    finally:
        bench.children.stop(dcmtk.process)


def _expect_files(server: Server, count: int) -> None:
    got = clear_folder(server.workdir / "out")
    if got != count:
        raise BenchError(f"{server.name} received {got} files, expected {count}")


def _storescu_startup(bench: Bench) -> float:
    """storescu's own process start-up, subtracted like stgcmt's (a few ms)."""
    seconds, code = run_timed([bench.tools.storescu, "--version"], env=dcmtk_env(), timeout=60)
    if code != 0:
        raise BenchError(f"storescu --version exited {code}")
    return seconds


def _send_storescu(bench: Bench, dcmtk: Server, size: str, instances: InstanceSet) -> None:
    startup = statistics.median(_storescu_startup(bench) for _ in range(STARTUP_SAMPLES))
    seconds = storescu(bench, dcmtk, instances.folder)
    _expect_files(dcmtk, instances.count)
    sample = {
        "seconds": seconds,
        "startup_seconds": startup,
        "instances": instances.count,
        "bytes": instances.total_bytes,
    }
    samples(bench.results, "send", size, "storescu").append(sample)


def _stgcmt_startup() -> float:
    seconds, code = run_timed([sys.executable, "-m", "stgcmt", "--version"], timeout=120)
    if code != 0:
        raise BenchError(f"python -m stgcmt --version exited {code}")
    return seconds


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float | None:
    match = _LOG_TIME.match(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def cstore_phase(log_text: str) -> float | None:
    """Seconds from stgcmt send's "N files in M transactions" line (files scanned, journal
    written, association not yet opened) to its last "C-STORE" line (-v), from its own log
    timestamps (millisecond resolution). A cross-check of the start-up subtraction, which is
    noisy on a loaded machine."""
    start = end = None
    for line in log_text.splitlines():
        if start is None and " files in " in line and " transactions for " in line:
            start = _log_time(line)
        elif start is not None and "C-STORE " in line:
            end = _log_time(line) or end
    return None if start is None or end is None else end - start


def _send_stgcmt(bench: Bench, dcmtk: Server, size: str, instances: InstanceSet) -> None:
    startup = statistics.median(_stgcmt_startup() for _ in range(STARTUP_SAMPLES))
    journal = bench.folder("send-journal") / "journal.sqlite"
    journal.parent.mkdir()
    argv = [
        sys.executable,
        "-m",
        "stgcmt",
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
    with open(log_path, "wb") as log:
        seconds, code = run_timed(argv, timeout=CLIENT_TIMEOUT, log=log)
    if code != 1:  # 1: stored, then Storage Commitment rejected by storescp (as expected)
        raise BenchError(f"stgcmt send exited {code}, expected 1; see {log_path}")
    _expect_files(dcmtk, instances.count)
    sample = {
        "seconds": seconds,
        "startup_seconds": startup,
        "cstore_phase_seconds": cstore_phase(log_path.read_text(errors="replace")),
        "instances": instances.count,
        "bytes": instances.total_bytes,
    }
    samples(bench.results, "send", size, "stgcmt").append(sample)


# -- 3. commitment latency -----------------------------------------------------------------------


def commitment(bench: Bench) -> None:
    """N-ACTION -> N-EVENT-REPORT for growing reference counts, each count in a fresh SCP
    process so its peak RSS belongs to that count. Per run, ``commit_stored`` fresh instances
    are stored first (untimed); the remaining references name instances nobody holds."""
    for refs in bench.plan.commit_refs:
        workdir = bench.folder(f"commit-scp-{refs}")
        server = start_our_scp(bench.children, workdir, bench.peer.port)
        try:
            _commit_series(bench, server, refs)
        finally:
            bench.children.stop(server.process)


def orthanc_commitment(bench: Bench) -> None:
    """The same against Orthanc, only up to a few thousand references: its processing grows
    super-linearly."""
    assert bench.tools.orthanc is not None
    for refs in bench.plan.orthanc_refs:
        workdir = bench.folder(f"commit-orthanc-{refs}")
        server = start_orthanc(bench.children, bench.tools.orthanc, workdir, bench.peer.port)
        try:
            _commit_series(bench, server, refs)
        finally:
            bench.children.stop(server.process)


def _commit_series(bench: Bench, server: Server, refs: int) -> None:
    stored_count = min(refs, bench.plan.commit_stored)
    for run in range(bench.plan.runs):
        stored = bench.new_set(f"commit-{refs}", stored_count, SMALL_SIDE)
        storescu(bench, server, stored.folder)
        references = list(stored.refs) + missing_refs(refs - stored_count)
        transaction_uid = generate_uid()
        report = commit(bench, server, references, stored_count, transaction_uid)
        sample = {
            "latency_s": report.latency_s,
            "references": refs,
            "stored": stored_count,
            "missing": refs - stored_count,
        }
        if server.name == "stgcmt":
            log = server.workdir / "scp.log"
            sample["phases_s"] = scp_phases(log, transaction_uid, report.sent_wall)
        samples(bench.results, "commitment", server.name, str(refs)).append(sample)
        say(f"commitment {server.name} {refs} refs run {run + 1}: {report.latency_s:.3f} s")
    rss = server.peak_rss_mb()
    bench.results.setdefault("commitment_rss_mb", {}).setdefault(server.name, {})[str(refs)] = rss


_PHASE_LINES = {
    "journaled": "references journaled",
    "verifying": "references (policy",
    "verified": "report pending for",
    "delivered": "delivered to",
}


def _phase_marks(log: Path, transaction_uid: str) -> dict[str, float | None]:
    marks: dict[str, float | None] = dict.fromkeys(_PHASE_LINES)
    for line in log.read_text(errors="replace").splitlines():
        if transaction_uid in line:
            for name, text in _PHASE_LINES.items():
                if text in line:
                    marks[name] = _log_time(line)
    return marks


def scp_phases(log: Path, transaction_uid: str, sent_wall: float) -> dict[str, float | None]:
    """Where the latency goes, from our SCP's own log lines for this transaction (ms
    timestamps): N-ACTION received and journaled, verification, report delivery. "delivered"
    is logged once the peer's answer is back, a moment after the report arrived: wait for it
    (bounded)."""
    deadline = time.monotonic() + 5.0
    marks = _phase_marks(log, transaction_uid)
    while marks["delivered"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        marks = _phase_marks(log, transaction_uid)
    order = [("action_to_journaled", None, "journaled"), ("verify", "verifying", "verified")]
    order.append(("report_delivery", "verified", "delivered"))
    phases: dict[str, float | None] = {}
    for label, begin, end in order:
        start = sent_wall if begin is None else marks[begin]
        stop = marks[end]
        phases[label] = None if start is None or stop is None else round(stop - start, 3)
    return phases


# -- 4. concurrency ------------------------------------------------------------------------------


def concurrency(bench: Bench) -> None:
    """1, 2, 4 storescu associations at once into one SCP; total instances/s."""
    plan = bench.plan
    server = start_our_scp(bench.children, bench.folder("concurrency-scp"), bench.peer.port)
    try:
        for run in range(plan.runs):
            for level in plan.concurrency:
                _concurrent_one(bench, server, level)
            say(f"concurrency {server.name} run {run + 1}/{plan.runs} done")
        samples(bench.results, "concurrency_rss_mb", server.name).append(server.peak_rss_mb())
    finally:
        bench.children.stop(server.process)


def _concurrent_one(bench: Bench, server: Server, level: int) -> None:
    count = bench.plan.small
    sets = [bench.new_set(f"conc-{level}-{i}", count, SMALL_SIDE) for i in range(level)]
    argvs = [storescu_argv(bench, server, s.folder) for s in sets]
    seconds, codes = run_parallel(
        argvs, env=dcmtk_env(), timeout=CLIENT_TIMEOUT, log=bench.log("storescu")
    )
    if any(codes):
        raise BenchError(f"concurrent storescu into {server.name} exited {codes}")
    sample = {"seconds": seconds, "instances": count * level, "associations": level}
    samples(bench.results, "concurrency", server.name, str(level)).append(sample)


SCENARIOS: list[tuple[str, str, Callable[[Bench], None]]] = [
    ("ingest", "1. ingest", ingest),
    ("send", "2. send", send),
    ("commitment", "3. commitment (stgcmt)", commitment),
    ("commitment", "3. commitment (Orthanc)", orthanc_commitment),
    ("concurrency", "4. concurrency", concurrency),
]
