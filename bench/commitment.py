"""Commitment latency: N-ACTION sent -> N-EVENT-REPORT received, with **every** referenced
instance stored (fresh ones, stored untimed with storescu just before), and a separate mixed
figure where most references name instances nobody holds (0112H: the cheap path).

Each reference count runs in a fresh SCP process, so its peak RSS belongs to that count.
"""

from __future__ import annotations

import time
from pathlib import Path

from .dicomdata import SMALL_SIDE, missing_refs
from .scenarios import Bench, commit, log_time, samples, say, servers_running, storescu
from .servers import Server, start_orthanc


def commitment(bench: Bench) -> None:
    """Every reference stored, for each count; then the mixed figure."""
    for refs in bench.plan.commit_refs:
        with servers_running(bench, [bench.start_scp("stgcmt", f"commit-{refs}")]) as (scp,):
            _commit_series(bench, scp, "all stored", refs, refs)
    refs, stored = bench.plan.mixed
    with servers_running(bench, [bench.start_scp("stgcmt", f"commit-mixed-{refs}")]) as (scp,):
        _commit_series(bench, scp, "mixed", refs, stored)


def orthanc_commitment(bench: Bench) -> None:
    """The same against Orthanc, every reference stored, only up to a few thousand references:
    its processing grows super-linearly."""
    assert bench.tools.orthanc is not None
    for refs in bench.plan.orthanc_refs:
        workdir = bench.folder(f"commit-orthanc-{refs}")
        server = start_orthanc(bench.children, bench.tools.orthanc, workdir, bench.peer.port)
        with servers_running(bench, [server]):
            _commit_series(bench, server, "all stored", refs, refs)


def _commit_series(bench: Bench, server: Server, kind: str, refs: int, stored: int) -> None:
    for run in range(bench.plan.commit_runs):
        instances = bench.new_set(f"commit-{refs}", stored, SMALL_SIDE)
        storescu(bench, server, instances)
        references = list(instances.refs) + missing_refs(refs - stored)
        report, uid = commit(bench, server, references, stored)
        sample = {
            "latency_s": report.latency_s,
            "references": refs,
            "stored": stored,
            "missing": refs - stored,
        }
        if server.name == "stgcmt":
            sample["phases_s"] = scp_phases(server.workdir / "scp.log", uid, report.sent_wall)
        samples(bench.results, "commitment", kind, server.name, str(refs)).append(sample)
        say(f"commitment {server.name} {kind} {refs} refs run {run + 1}: {report.latency_s:.3f} s")
    rss = bench.results.setdefault("commitment_rss_mb", {}).setdefault(kind, {})
    rss.setdefault(server.name, {})[str(refs)] = server.peak_rss_mb()


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
                    marks[name] = log_time(line)
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
