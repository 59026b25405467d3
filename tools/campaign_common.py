"""What ``tools/crash_campaign.py`` and ``tools/power_cut.py`` share: their command line, the
loop of rounds under a time limit, and how a summary is printed and turned into an exit status.

Both harnesses differ in what a round does and what they check; how they are started, bounded
and reported is the same, so that a script reading one reads the other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stgcmt.storage.queries import SqliteScuQueries


class Restartable(Protocol):
    """A long-running stgcmt service of a harness (SCP or agent)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class HasActiveTransactions(Protocol):
    """The SCP's queries, as far as settling needs them."""

    def active_transactions(self) -> Any: ...


@dataclass
class Checks:
    """Invariants checked so far and the ones that failed: a harness counts every check so
    that "0 violations" cannot hide "0 checks"."""

    checks: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        self.checks += 1
        if not ok:
            self.violations.append(message)


def check_no_unjustified_deletion(
    s: Checks, sent_paths: dict[str, Path], committed: set[str], scu: SqliteScuQueries
) -> None:
    """No file the SCU sent is gone unless the SCP committed it, and no deletion or move is
    left due once the agent has settled (both harnesses' last check on the modality side)."""
    for uid, path in sorted(sent_paths.items()):
        if not path.exists():
            s.check(uid in committed, f"{path.name} deleted but {uid} was never committed")
    due = scu.due_actions()
    s.check(due == 0, f"{due} delete/move actions still due after settling")


def settle(scp_queries: HasActiveTransactions, agent: Restartable, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until the SCP has no active transaction, then restart the
    agent once: it finishes due deletions at start, so the final checks see them done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and scp_queries.active_transactions():
        time.sleep(0.2)
    agent.stop()
    agent.start()
    time.sleep(0.5)


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``proc`` to end; SIGKILL it past ``timeout`` so that a stuck child cannot
    hang the harness."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def campaign_parser(doc: str, target: str, default: int, what: str) -> argparse.ArgumentParser:
    """The options both harnesses take; ``--<target>`` is how many kills/cuts to reach."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(f"--{target}", type=int, default=default, help=f"{what} ({default})")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: temp)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def campaign_workdir(workdir: Path | None, prefix: str) -> Path:
    """The folder given (created if need be) or a fresh temporary one that is kept: the logs
    in it are what a violation is investigated with."""
    chosen = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def run_rounds(
    done: Callable[[], bool],
    one_round: Callable[[int], None],
    reached: Callable[[], str],
    violations: list[str],
    max_seconds: float,
) -> int:
    """Run ``one_round(index)`` until ``done()``; past ``max_seconds`` stop and record a
    violation saying ``reached()`` so far (a campaign that cannot reach its target is a
    finding, not a hang). Returns the number of rounds run."""
    started = time.monotonic()
    index = 0
    while not done():
        if time.monotonic() - started > max_seconds:
            violations.append(f"time limit reached after {index} rounds and {reached()}")
            break
        one_round(index)
        index += 1
    return index


def report(
    as_json: bool, fields: dict[str, Any], violations: list[str], seed: int, lines: list[str]
) -> int:
    """Print the summary (JSON for scripts: ``fields``, the violations and the seed to replay
    with; else each violation then ``lines``); exit status 1 on any violation, so that CI fails
    on a broken promise."""
    if as_json:
        print(json.dumps({**fields, "violations": violations, "seed": seed}, indent=2))
    else:
        for violation in violations:
            print(f"VIOLATION: {violation}")
        for line in lines:
            print(line)
    return 1 if violations else 0
