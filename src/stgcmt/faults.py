"""Deliberate crash points for the crash campaign (``tools/crash_campaign.py``).

Inactive unless the environment variable ``STGCMT_CRASH_POINTS`` names them, e.g.
``scp.verify.mid=0.3,scu.purge.mid=0.5``: at a named point the process then kills itself with
SIGKILL with that probability, exactly as a power cut would stop it there. Random-time kills
rarely land in the narrow windows that matter (between fsync and the index update, between two
deletions); these points make the campaign hit them on purpose.
"""

from __future__ import annotations

import os
import random
import signal

POINTS = (
    "scp.store.after_rename",
    "scp.n_action.after_journal",
    "scp.verify.mid",
    "scp.barrier.after_fsync",
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
        os.kill(os.getpid(), signal.SIGKILL)
