"""Two figures about the receiving side rather than throughput: clients that leave Nagle's
algorithm on (Debian's storescu without ``TCP_NODELAY=1``, a pynetdicom modality), whose small
PDUs wait for the receiver's delayed ACK unless the receiver acknowledges at once; and the
memory one 512 MB C-STORE costs the server (peak RSS, ``VmHWM``)."""

from __future__ import annotations

import time
from pathlib import Path

from pynetdicom import AE

from .dicomdata import SECONDARY_CAPTURE, SMALL_SIDE, make_big
from .procs import LOCALHOST, BenchError, nagle_env
from .report import DROPPED
from .scenarios import (
    Bench,
    commit,
    rotated,
    samples,
    say,
    servers_running,
    storescu,
)
from .servers import SCU_AET, Server

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


class ResponseLost(BenchError):
    """pynetdicom read a C-STORE response but never handed it to ``send_c_store``: its
    association reactor can take a fast response off the queue first and drop it as an
    "unexpected C-STORE service message" (pynetdicom 3.0, association.py ``_run_reactor``).
    The SCP did answer: it sent every response, and the client's kernel acknowledged them."""


LOST_RESPONSE_TIMEOUT = 5.0
"""How long a C-STORE response may take before pynetdicom is taken to have dropped it."""
PYNETDICOM_ATTEMPTS = 3


def pynetdicom_store(server: Server, paths: list[Path]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for a plain pynetdicom modality (Nagle on,
    its default) to associate, send every file as a C-STORE and release. The CPU time is the
    client's own cost (nothing else in this process works meanwhile): where it is most of the
    wall time, the client, not the SCP, sets the pace."""
    ae = AE(SCU_AET)
    ae.acse_timeout = ae.network_timeout = 60
    ae.dimse_timeout = LOST_RESPONSE_TIMEOUT
    ae.add_requested_context(SECONDARY_CAPTURE, EXPLICIT_VR_LE)
    start, cpu = time.perf_counter(), time.process_time()
    assoc = ae.associate(LOCALHOST, server.port, ae_title=server.aet)
    if not assoc.is_established:
        raise BenchError(f"pynetdicom could not associate with {server.name}")
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            if "Status" not in status:  # pynetdicom's answer to an abort or a DIMSE timeout
                raise ResponseLost(f"pynetdicom: no C-STORE response from {server.name}")
            if int(status.Status) != 0:
                raise BenchError(f"pynetdicom C-STORE into {server.name}: status {status.Status}")
    finally:
        assoc.release()
    return time.perf_counter() - start, time.process_time() - cpu


def pynetdicom_attempts(bench: Bench, server: Server) -> dict[str, float]:
    """A sample of :func:`pynetdicom_store`, with the responses pynetdicom dropped: a run that
    lost one to pynetdicom's own race is not a figure; it is counted and run again with fresh
    UIDs."""
    for lost in range(PYNETDICOM_ATTEMPTS):
        instances = bench.new_set("nagle", bench.plan.nagle, SMALL_SIDE)
        try:
            seconds, cpu = pynetdicom_store(server, instances.paths)
            return {
                "seconds": seconds,
                "client_cpu_seconds": cpu,
                "instances": instances.count,
                DROPPED: lost,
            }
        except ResponseLost as exc:
            say(f"{exc} (pynetdicom's reactor race); again with fresh instances")
    raise BenchError(f"pynetdicom dropped a response in {PYNETDICOM_ATTEMPTS} runs in a row")


def nagle(bench: Bench) -> None:
    """Per-instance wall time of Nagle-on clients: storescu into our SCP and into storescp (also
    Nagle on, as Debian runs it), and pynetdicom into our SCP."""
    plan = bench.plan
    ours = bench.start_scp("stgcmt", "nagle")
    dcmtk = bench.start_storescp("nagle", nagle=True)
    with servers_running(bench, [ours, dcmtk]):
        for run in range(plan.runs):
            for client, server in rotated(
                [("storescu", ours), ("storescu", dcmtk), ("pynetdicom", ours)], run
            ):
                _nagle_one(bench, client, server)
            say(f"Nagle-on run {run + 1}/{plan.runs} done")


def _nagle_one(bench: Bench, client: str, server: Server) -> None:
    """One client run with fresh UIDs (a repeat would take our SCP's duplicate path)."""
    if client == "storescu":
        instances = bench.new_set("nagle", bench.plan.nagle, SMALL_SIDE)
        seconds = storescu(bench, server, instances, env=nagle_env())
        sample = {"seconds": seconds, "instances": instances.count}
    else:
        sample = pynetdicom_attempts(bench, server)
    samples(bench.results, "nagle", f"{client} -> {server.name}").append(sample)


def memory(bench: Bench) -> None:
    """Peak RSS of a fresh server before and after one C-STORE of ``big_mb`` MiB (storescu,
    after one small C-STORE so that start-up and first-use allocations are in the baseline);
    for our SCP the instance is then committed, to show it was stored whole."""
    big = make_big(bench.folder("big"), bench.plan.big_mb)
    starts = (lambda: bench.start_scp("stgcmt", "memory"), lambda: bench.start_storescp("memory"))
    for start in starts:  # one at a time: each figure has the machine's memory to itself
        server = start()
        with servers_running(bench, [server]):
            storescu(bench, server, bench.new_set("memory-warm-up", 1, SMALL_SIDE))
            before = server.peak_rss_mb()
            seconds = storescu(bench, server, big)
            after = server.peak_rss_mb()
            if before is None or after is None:
                raise BenchError(f"{server.name} ended during the big C-STORE")
            sample: dict[str, float | None] = {
                "bytes": big.total_bytes,
                "seconds": seconds,
                "rss_before_mb": before,
                "rss_after_mb": after,
            }
            if server.name == "stgcmt":
                report, _ = commit(bench, server, list(big.refs), 1)
                sample["commit_seconds"] = report.latency_s
                sample["rss_after_commit_mb"] = server.peak_rss_mb()
            samples(bench.results, "memory", server.name).append(sample)
            say(
                f"one {big.total_bytes / 2**20:.0f} MiB C-STORE into {server.name}: +"
                f"{after - before:.1f} MB peak RSS"
            )
