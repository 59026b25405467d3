"""Commitment latency with stgcmt on both ends: N-ACTION sent → N-EVENT-REPORT received.

    python -m bench.commit_latency 100 1000 10000 100000

Our SCP runs in this process with a fresh data directory; the requester and the report listener
use stgcmt's own networking seam (``stgcmt.ul``), so no pydicom-based peer adds its own
encoding time. Every reference names an instance that is not stored (0112H): the
figure is the protocol path (decode, journal, lookups, report), not fsync. Prints one line per
count with the latency and this process's peak RSS (SCP and peers together).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom.uid import generate_uid

from stgcmt import ul as net
from stgcmt.config import RemoteAE, RetryPolicy, ScpConfig
from stgcmt.dicom.commitment import CommitmentRequest, Reference
from stgcmt.scp.service import StorageCommitmentSCP

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
LOCALHOST = "127.0.0.1"


def main(counts: list[int]) -> None:
    received = threading.Event()
    arrival = [0.0]

    def on_report(link: net.Link, event: net.EventReport) -> int:
        arrival[0] = time.perf_counter()
        received.set()
        return 0

    handlers = net.Handlers(n_event_report=on_report)
    with net.Server("REQUESTER", LOCALHOST, 0, handlers) as listener:
        config = ScpConfig(
            bind=LOCALHOST,
            port=0,
            data_dir=Path(tempfile.mkdtemp(prefix="stgcmt-latency-")),
            remotes=(RemoteAE("REQUESTER", LOCALHOST, listener.port),),
            retry=RetryPolicy(start=0.2, cap=1.0),
        )
        with StorageCommitmentSCP(config) as scp:
            archive = RemoteAE(config.aet, LOCALHOST, scp.port)
            for count in counts:
                received.clear()
                refs = [Reference(SECONDARY_CAPTURE, generate_uid()) for _ in range(count)]
                request = CommitmentRequest(generate_uid(), refs)
                plan = net.ContextPlan(commitment="scu")
                with net.open_association("REQUESTER", archive, plan) as association:
                    start = time.perf_counter()
                    association.n_action(request)
                if not received.wait(300):
                    sys.exit(f"no report for {count} references within 300 s")
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                latency = arrival[0] - start
                print(f"{count:>7} refs: report after {latency:.3f} s, peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [100, 1000, 10_000, 100_000])
