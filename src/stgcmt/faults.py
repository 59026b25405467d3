"""Deliberate crash points for the crash campaign (``tools/crash_campaign.py``).

Inactive unless the environment variable ``STGCMT_CRASH_POINTS`` names them, e.g.
``scp.verify.mid=0.3,scu.purge.mid=0.5``: at a named point the process then kills itself with
SIGKILL with that probability, exactly as a power cut would stop it there. Random-time kills
rarely land in the narrow windows that matter (between fsync and the index update, between two
deletions); these points make the campaign hit them on purpose. When ``STGCMT_CRASH_LOG`` names
a file, a point that fires first appends ``NAME PID TIME`` to it: the campaign counts from it.
"""

from __future__ import annotations

import os
import random
import signal
import time

POINTS = (
    "scp.store.after_rename",
    "scp.index.mid_batch",
    "scp.n_action.after_journal",
    "scp.verify.mid",
    "scp.barrier.after_fsync",
    "scp.durability.after_sync",
    "scp.deliver.after_answer",
    "scu.send.after_store",
    "scu.send.after_pending",
    "scu.report.after_record",
    "scu.purge.mid",
)


def _parse(text: str) -> dict[str, float]:
    armed: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, probability = entry.partition("=")
        if name not in POINTS:
            raise ValueError(f"STGCMT_CRASH_POINTS: unknown crash point {name!r}")
        armed[name] = float(probability or 1.0)
    return armed


_ARMED = _parse(os.environ.get("STGCMT_CRASH_POINTS", ""))


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) if the campaign armed this point."""
    probability = _ARMED.get(name)
    if probability and random.random() < probability:
        _mark_fired(name)
        os.kill(os.getpid(), signal.SIGKILL)


def _mark_fired(name: str) -> None:
    """One appended line (an atomic write, kept by the kernel even though we die next)."""
    path = os.environ.get("STGCMT_CRASH_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{name} {os.getpid()} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)
