#!/usr/bin/env python3
"""Crash campaign: run our SCP, SCU agent and ``stgcmt send`` under load, SIGKILL one of them at
random moments and at armed crash points, restart, and check that nothing was lost.

    python tools/crash_campaign.py --kills 500          # a long campaign
    python tools/crash_campaign.py --kills 30 --seed 7  # what the test suite runs

Kills land during C-STORE, between C-STORE and N-ACTION, after the N-ACTION response, during
verification, during report delivery and during local purge (random timing plus the named
points of ``stgcmt.faults``). After the last kill everything is restarted unarmed and left to
settle, then the invariants are checked:

1. every instance the SCP reported committed is in its index, durable, and its file is intact
   (SHA-256 of the stored file as indexed, and the dataset bytes equal to what was sent);
2. every N-ACTION the SCP acknowledged ends in exactly one delivered report (or a logged
   give-up), and the SCU recorded it;
3. the SCU never deleted a file whose instance was not reported committed, and no transaction
   the SCP acknowledged is left pending;
4. every SQLite database passes ``PRAGMA integrity_check``.

Prints one summary line: kill points, invariants checked, violations. Exit status 1 on any
violation. Only 127.0.0.1 is used; every process started is stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from stgcmt.storage.queries import SqliteScpQueries, SqliteScuQueries

LOCALHOST = "127.0.0.1"
SCP_AET, SCU_AET = "ARCHIVE", "MODALITY"
SCP_POINTS = (
    "scp.store.after_rename",
    "scp.n_action.after_journal",
    "scp.verify.mid",
    "scp.barrier.after_fsync",
    "scp.deliver.after_answer",
)
AGENT_POINTS = ("scu.report.after_record", "scu.purge.mid")
SEND_POINTS = ("scu.send.after_store", "scu.send.after_pending", "scu.purge.mid")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


def dataset_digest(path: Path) -> str:
    """SHA-256 of the dataset bytes after the File Meta Information: the part C-STORE carries,
    identical in the sender's file and the archive's copy."""
    with open(path, "rb") as f:
        read_preamble(f, False)
        _read_file_meta_info(f)
        return hashlib.sha256(f.read()).hexdigest()


def make_instance(folder: Path, rng: random.Random) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = f"CRASH{rng.randrange(1000)}"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rng.choice((1, 16, 256)), 256
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = rng.randbytes(ds.Rows * ds.Columns)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


class Service:
    """A long-running stgcmt process (scp or agent), restartable, optionally armed."""

    def __init__(self, name: str, args: list[str], port: int, workdir: Path) -> None:
        self.name, self.args, self.port = name, args, port
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.armed: str | None = None

    def start(self, crash_point: str | None = None) -> None:
        env = {**os.environ, "STGCMT_CRASH_POINTS": f"{crash_point}=0.5" if crash_point else ""}
        self.armed = crash_point
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stgcmt", *self.args], stdout=log, stderr=log, env=env
            )
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if self.proc.poll() is not None:
                if self.proc.returncode == -signal.SIGKILL and crash_point:
                    return  # the armed point fired while resuming work: a kill, not a failure
                raise RuntimeError(f"{self.name} exited at start; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL now; True if it was running."""
        if not self.alive():
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return True

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Summary:
    kills: Counter = field(default_factory=Counter)
    checks: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        self.checks += 1
        if not ok:
            self.violations.append(message)

    def line(self) -> str:
        return (
            f"crash campaign: {sum(self.kills.values())} kill points, {self.checks} invariants"
            f" checked, {len(self.violations)} violations"
        )


class Campaign:
    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.data = workdir / "archive"
        self.journal = workdir / "scu-journal.sqlite"
        self.scp_queries = SqliteScpQueries(self.data)
        self.scu_queries = SqliteScuQueries(self.journal)
        self.originals = workdir / "originals"
        self.outbox = workdir / "outbox"
        for folder in (self.originals, self.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self.digests: dict[str, str] = {}  # SOP Instance UID -> dataset SHA-256
        self.sent_paths: dict[str, Path] = {}
        self.scp_port, self.agent_port = free_port(), free_port()
        config = workdir / "archive.toml"
        config.write_text(
            f'[scp]\naet = "{SCP_AET}"\nbind = "{LOCALHOST}"\nport = {self.scp_port}\n'
            f'data_dir = "{self.data}"\n\n'
            f'[[remote]]\naet = "{SCU_AET}"\nhost = "{LOCALHOST}"\nport = {self.agent_port}\n\n'
            "[retry]\nstart = 0.2\ncap = 1.0\ngive_up_after = 86400\n"
        )
        self.scp = Service("scp", ["scp", "--config", str(config)], self.scp_port, workdir)
        self.agent = Service(
            "agent",
            [
                "agent",
                "--aet",
                SCU_AET,
                "--bind",
                LOCALHOST,
                "--port",
                str(self.agent_port),
                "--journal",
                str(self.journal),
            ],
            self.agent_port,
            workdir,
        )
        self.summary = Summary()

    # -- one round: a send, and a kill somewhere ----------------------------------------------

    def batch(self, index: int) -> Path:
        folder = self.outbox / f"round-{index:04d}"
        folder.mkdir()
        for _ in range(self.rng.randint(2, 8)):
            path = make_instance(folder, self.rng)
            shutil.copy2(path, self.originals / path.name)
            self.digests[path.stem] = dataset_digest(path)
            self.sent_paths[path.stem] = path
        return folder

    def send(self, folder: Path, crash_point: str | None) -> subprocess.Popen:
        env = {**os.environ, "STGCMT_CRASH_POINTS": f"{crash_point}=0.5" if crash_point else ""}
        args = [
            sys.executable,
            "-m",
            "stgcmt",
            "send",
            f"{SCP_AET}@{LOCALHOST}:{self.scp_port}",
            str(folder),
            "--aet",
            SCU_AET,
            "--journal",
            str(self.journal),
            "--delete-committed",
            "--report-assoc",
            "any",
            "--same-assoc-wait",
            "0",
            "--timeout",
            "2",
            "--json",
        ]
        log = open(self.workdir / "send.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(args, stdout=log, stderr=log, env=env)

    def ensure_running(self) -> None:
        for service in (self.scp, self.agent):
            if not service.alive():
                if service.proc is not None and service.proc.returncode == -signal.SIGKILL:
                    self.summary.kills[f"{service.name}:{service.armed or 'timer'}"] += 1
                service.start()

    def round(self, index: int) -> None:
        folder = self.batch(index)
        victim = self.rng.choice(("scp", "agent", "send", "timer-scp", "timer-agent", "timer-send"))
        send_point = None
        if victim == "scp" and not self.scp.armed:
            self.scp.kill()
            self.scp.start(self.rng.choice(SCP_POINTS))
        elif victim == "agent" and not self.agent.armed:
            self.agent.kill()
            self.agent.start(self.rng.choice(AGENT_POINTS))
        elif victim == "send":
            send_point = self.rng.choice(SEND_POINTS)
        sender = self.send(folder, send_point)
        if victim.startswith("timer-"):
            time.sleep(self.rng.uniform(0.0, 1.2))
            target = victim.removeprefix("timer-")
            if target == "send":
                if sender.poll() is None:
                    sender.send_signal(signal.SIGKILL)
                    self.summary.kills["send:timer"] += 1
            elif getattr(self, target).kill():
                self.summary.kills[f"{target}:timer"] += 1
        try:
            sender.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sender.kill()
            sender.wait()
        if sender.returncode == -signal.SIGKILL and send_point:
            self.summary.kills[f"send:{send_point}"] += 1
        self.ensure_running()

    # -- settle, then check --------------------------------------------------------------------

    def settle(self, timeout: float) -> None:
        """Restart everything unarmed and wait until the SCP has no active transaction."""
        for service in (self.scp, self.agent):
            if service.armed:
                service.kill()
                service.armed = None
        self.ensure_running()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.scp_queries.active_transactions():
                break
            time.sleep(0.2)
        # the agent finishes due deletions at start: restart it once more to be sure
        self.agent.stop()
        self.agent.start()
        time.sleep(0.5)

    def check(self) -> Summary:
        s = self.summary
        problems = self.scp_queries.integrity_problems()
        for name in ("index.sqlite", "commitment.sqlite"):
            s.check(
                not [p for p in problems if p.startswith(f"{name}:")],
                f"{name} fails integrity_check",
            )
        s.check(
            not self.scu_queries.integrity_problems(),
            "SCU journal fails integrity_check",
        )
        committed = self._check_committed_instances_intact()
        self._check_every_request_reported()
        self._check_no_unjustified_deletion(committed)
        return s

    def _check_committed_instances_intact(self) -> set[str]:
        s = self.summary
        committed = self.scp_queries.committed_instances()
        index = {row["sop_instance_uid"]: row for row in self.scp_queries.instances()}
        for uid in committed:
            row = index.get(uid)
            s.check(row is not None, f"committed {uid} missing from the index")
            if row is None:
                continue
            stored = self.data / row["path"]
            s.check(row["durable"] == 1, f"committed {uid} not durable")
            s.check(
                stored.exists() and sha256(stored) == row["sha256"],
                f"committed {uid}: file missing or SHA-256 differs from the index",
            )
            s.check(
                stored.exists() and dataset_digest(stored) == self.digests.get(uid),
                f"committed {uid}: stored dataset differs from what was sent",
            )
        return committed

    def _check_every_request_reported(self) -> None:
        s = self.summary
        scp = [
            (tx["transaction_uid"], tx["state"], tx["duplicate_of"])
            for tx in self.scp_queries.transactions()
        ]
        delivered = Counter(uid for uid, state, dup in scp if state == "delivered" and not dup)
        for uid, state, dup in scp:
            s.check(state in ("delivered", "given_up"), f"SCP transaction {uid} left {state}")
            if not dup:
                s.check(delivered[uid] <= 1, f"transaction {uid} delivered {delivered[uid]} times")
        acknowledged = {uid for uid, _, _ in scp}
        for tx in self.scu_queries.transactions():
            uid, state = tx["transaction_uid"], tx["state"]
            if uid in acknowledged:
                s.check(
                    state in ("committed", "failed"),
                    f"SCU transaction {uid}: the SCP reported it, the SCU still says {state}",
                )

    def _check_no_unjustified_deletion(self, committed: set[str]) -> None:
        s = self.summary
        for uid, path in self.sent_paths.items():
            if not path.exists():
                s.check(uid in committed, f"{path.name} deleted but {uid} was never committed")
        due = self.scu_queries.due_actions()
        s.check(due == 0, f"{due} delete/move actions still due after settling")

    def stop(self) -> None:
        for service in (self.scp, self.agent):
            service.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_campaign(kills: int, seed: int, workdir: Path, max_seconds: float = 3600) -> Summary:
    campaign = Campaign(workdir, seed)
    started = time.monotonic()
    try:
        campaign.ensure_running()
        index = 0
        while sum(campaign.summary.kills.values()) < kills:
            if time.monotonic() - started > max_seconds:
                campaign.summary.violations.append(f"time limit reached after {index} rounds")
                break
            campaign.round(index)
            index += 1
        campaign.settle(timeout=120)
        return campaign.check()
    finally:
        campaign.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="kill points to reach (200)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: temp)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stgcmt-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    summary = run_campaign(args.kills, args.seed, workdir)
    if args.json:
        print(
            json.dumps(
                {
                    "kills": dict(summary.kills),
                    "checks": summary.checks,
                    "violations": summary.violations,
                    "seed": args.seed,
                },
                indent=2,
            )
        )
    else:
        for violation in summary.violations:
            print(f"VIOLATION: {violation}")
        print(f"kill points by process and place: {dict(sorted(summary.kills.items()))}")
        print(f"{summary.line()} (seed {args.seed}, logs in {workdir})")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
