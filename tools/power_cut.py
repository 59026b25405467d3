#!/usr/bin/env python3
"""Power cuts: run our SCP, SCU agent and ``stgcmt send`` on a file system that forgets
everything never fsynced (``tools/lazyfs.py``), cut the power at random moments, restart on
what survived and check that nothing promised was lost.

    python tools/power_cut.py --cuts 200          # a long run
    python tools/power_cut.py --cuts 20 --seed 7  # what the test suite runs

SIGKILL leaves the page cache intact, so no kill can show a missing fsync; a cut here can. The
SCP's data dir and the SCU's journal live on the lazy mount; the SCU's outbox (the files it
sends and deletes once committed) and the logs are on an ordinary directory. A deletion is the
one act the harness must see exactly as it happened: were the outbox on the lazy mount too, a
cut would often undo the deletion of a file the SCP then lost, and hide the loss. (A modality
and its archive do not share a power supply either: the archive losing power must not take
back what the modality already did.)

A cut is: SIGKILL every stgcmt process at once, then unmount, which drops every unsynced write
and directory change; the backing directory then holds exactly what was synced. Right after
each cut, on that state (copies of the databases, the backing files):

1. every database passes ``PRAGMA integrity_check``;
2. every instance the SCU was told is committed (its journal says so, or it deleted the file)
   is in the SCP's index, durable, with its file present, the indexed SHA-256, and the dataset
   bytes that were sent;
3. every N-ACTION the SCU saw acknowledged (its log says so) is in the SCP's journal;
4. every report the SCU recorded (its log says so) is still recorded in its journal.

Then everything is remounted and restarted. After the last cut the services settle and the
checks of ``tools/crash_campaign.py`` run on the live state (committed instances intact,
every acknowledged N-ACTION delivered exactly once and recorded by the SCU, no file deleted
unless committed, nothing left due, integrity), plus: every report reached the SCU at most
once between two cuts (a repeat is allowed only across a cut: the SCP may lose the record of a
delivery the SCU had answered), and no report was taken as new twice.

Prints ``N power cuts, M invariants checked, V violations`` and exits 1 on any violation. Needs
/dev/fuse, fusermount3 (Debian's fuse3) and pyfuse3. Every mount is unmounted, also on failure.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stgcmt.storage.queries import SqliteScpQueries, SqliteScuQueries

import campaign_common as common
from crash_campaign import (
    LOCALHOST,
    SCP_AET,
    SCU_AET,
    dataset_digest,
    free_port,
    listening,
    make_instance,
    sha256,
)

LAZYFS = Path(__file__).resolve().parent / "lazyfs.py"
REQUESTED = re.compile(r"transaction (\S+) \(#\d+\): commitment of \d+ instances requested")
FIRST_REPORT = re.compile(r"transaction (\S+) \(#\d+\): report from .* on .*: \d+ committed")
DROPPED = re.compile(r"dropped unsynced writes of (\d+) files and unsynced entries of (\d+) dir")
REPEAT_REPORT = re.compile(r"transaction (\S+) \(#\d+\): report from .* again \(already")


@dataclass
class Summary(common.Checks):
    dropped: int = 0  # files and directories whose unsynced changes the cuts dropped


class LazyMount:
    """``tools/lazyfs.py`` mounted over a backing directory; :meth:`unmount` is the cut: it
    drops everything unsynced."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path) -> None:
        self.backing, self.mountpoint, self.log = backing, mountpoint, log
        self.proc: subprocess.Popen | None = None
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)

    def mount(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(LAZYFS), str(self.backing), str(self.mountpoint)],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"lazyfs exited at mount; see {self.log}")
            if time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError(f"lazyfs did not mount; see {self.log}")
            time.sleep(0.02)

    def unmount(self) -> None:
        """Unmount and wait for the daemon; force it if it will not go."""
        for _ in range(50):
            if not os.path.ismount(self.mountpoint):
                break
            done = subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False
            )
            if done.returncode == 0:
                break
            time.sleep(0.1)
        if self.proc is not None:
            common.wait_or_kill(self.proc, 20)
            self.proc = None
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], check=False)
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)


class Service:
    """A long-running stgcmt process (scp or agent)."""

    def __init__(self, name: str, args: list[str], port: int, workdir: Path) -> None:
        self.name, self.args, self.port = name, args, port
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stgcmt", *self.args], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            common.wait_or_kill(self.proc, 30)


class PowerCutCampaign:
    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.fs = LazyMount(workdir / "backing", workdir / "mnt", workdir / "lazyfs.log")
        self.data = self.fs.mountpoint / "archive"
        self.journal = self.fs.mountpoint / "scu-journal.sqlite"
        self.scp_queries = SqliteScpQueries(self.data)
        self.scu_queries = SqliteScuQueries(self.journal)
        self.outbox = workdir / "outbox"  # an ordinary directory: see the module docstring
        self.outbox.mkdir(parents=True, exist_ok=True)
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
        agent_args = ["agent", "--aet", SCU_AET, "--bind", LOCALHOST]
        agent_args += ["--port", str(self.agent_port), "--journal", str(self.journal)]
        self.agent = Service("agent", agent_args, self.agent_port, workdir)
        self.sender: subprocess.Popen | None = None
        self.summary = Summary()
        self.cuts = 0
        self.cut_offsets: list[dict[str, int]] = []  # log sizes at each cut

    @property
    def logs(self) -> list[Path]:
        return [self.workdir / "send.log", self.agent.log]

    # -- load and cuts -------------------------------------------------------------------------

    def batch(self, index: int) -> Path:
        folder = self.outbox / f"round-{index:04d}"
        folder.mkdir()
        for _ in range(self.rng.randint(2, 8)):
            path = make_instance(folder, self.rng)
            self.digests[path.stem] = dataset_digest(path)
            self.sent_paths[path.stem] = path
        return folder

    def send(self, folder: Path) -> subprocess.Popen:
        args = [sys.executable, "-m", "stgcmt", "send", f"{SCP_AET}@{LOCALHOST}:{self.scp_port}"]
        args += [str(folder), "--aet", SCU_AET, "--journal", str(self.journal)]
        args += ["--delete-committed", "--report-assoc", "any", "--same-assoc-wait", "0"]
        args += ["--timeout", "2", "--json"]
        with open(self.workdir / "send.log", "ab") as log:
            return subprocess.Popen(args, stdout=log, stderr=log)

    def ensure_running(self) -> None:
        for service in (self.scp, self.agent):
            if not service.alive():
                service.start()

    def power_round(self, index: int) -> None:
        """A send (C-STOREs, N-ACTION, reports, deletions); mostly a cut somewhere in it or in
        the SCP's verification and delivery after it."""
        self.sender = self.send(self.batch(index))
        if self.rng.random() < 0.75:
            time.sleep(self.rng.uniform(0.0, 2.0))
            self.power_cut()
        else:
            common.wait_or_kill(self.sender, 60)
        self.ensure_running()

    def power_cut(self) -> None:
        """SIGKILL every stgcmt process at once, then drop everything unsynced."""
        procs = [p for p in (self.sender, self.scp.proc, self.agent.proc) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait()
        self.scp.proc = self.agent.proc = self.sender = None
        deleted = {uid for uid, path in self.sent_paths.items() if not path.exists()}
        self.cut_offsets.append({str(p): p.stat().st_size if p.exists() else 0 for p in self.logs})
        self.fs.unmount()
        self.cuts += 1
        said = self.fs.log.read_text().splitlines()
        found = DROPPED.search(said[-1]) if said else None
        if found:
            self.summary.dropped += int(found.group(1)) + int(found.group(2))
        self.check_after_cut(deleted)
        self.fs.mount()

    # -- checks on the state a cut left --------------------------------------------------------

    def check_after_cut(self, deleted: set[str]) -> None:
        s = self.summary
        where = f"after cut {self.cuts}"
        scratch = self.workdir / "after-cut"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        archive = self.fs.backing / "archive"
        dbs = {}
        for name, folder in (
            ("index.sqlite", archive),
            ("commitment.sqlite", archive),
            ("scu-journal.sqlite", self.fs.backing),
        ):
            for suffix in ("", "-wal"):
                if (folder / (name + suffix)).exists():
                    shutil.copy2(folder / (name + suffix), scratch / (name + suffix))
            dbs[name] = scratch / name
        rows: dict[str, tuple] = {}
        scp_txs: set[str] = set()
        scu_committed: set[str] = set()
        scu_tx_states: dict[str, str] = {}
        for name, path in dbs.items():
            if not path.exists():
                continue  # not created yet: nothing was promised from it
            conn = sqlite3.connect(path)
            try:
                found = [r[0] for r in conn.execute("PRAGMA integrity_check")]
                s.check(found == ["ok"], f"{where}: {name} fails integrity_check: {found[:3]}")
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if found != ["ok"] or not tables & {"instances", "transactions"}:
                    continue  # schema not synced yet: nothing was promised from it
                if name == "index.sqlite":
                    for r in conn.execute(
                        "SELECT sop_instance_uid, path, sha256, durable FROM instances"
                    ):
                        rows[r[0]] = r
                elif name == "commitment.sqlite":
                    scp_txs = {
                        r[0] for r in conn.execute("SELECT transaction_uid FROM transactions")
                    }
                else:
                    scu_committed = {
                        r[0]
                        for r in conn.execute(
                            "SELECT sop_instance_uid FROM files WHERE state = 'committed'"
                        )
                    }
                    scu_tx_states = dict(
                        conn.execute("SELECT transaction_uid, state FROM transactions")
                    )
            finally:
                conn.close()
        for uid in sorted(scu_committed | deleted):
            how = "deleted by the SCU" if uid in deleted else "committed per the SCU journal"
            row = rows.get(uid)
            s.check(row is not None, f"{where}: {uid} ({how}) is not in the SCP's index")
            if row is None:
                continue
            s.check(row[3] == 1, f"{where}: {uid} ({how}) is not durable in the index")
            stored = archive / row[1]
            intact = stored.is_file() and sha256(stored) == row[2]
            s.check(intact, f"{where}: {uid} ({how}): file missing or SHA-256 differs")
            s.check(
                intact and dataset_digest(stored) == self.digests.get(uid),
                f"{where}: {uid} ({how}): stored dataset differs from what was sent",
            )
        text = self.log_text()
        for uid in sorted(set(REQUESTED.findall(text))):
            s.check(
                uid in scp_txs,
                f"{where}: N-ACTION {uid} was acknowledged but is not in the SCP's journal",
            )
        for uid in sorted(set(FIRST_REPORT.findall(text))):
            s.check(
                scu_tx_states.get(uid) in ("committed", "failed"),
                f"{where}: the SCU recorded the report of {uid} but its journal says"
                f" {scu_tx_states.get(uid)}",
            )

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def check_reports_once(self) -> None:
        """Between two cuts a transaction is reported at most once; taken as new once."""
        s = self.summary
        first: Counter = Counter()
        per_epoch: Counter = Counter()
        for log in self.logs:
            if not log.exists():
                continue
            bounds = [offsets.get(str(log), 0) for offsets in self.cut_offsets]
            offset = 0
            with open(log, "rb") as f:
                for raw in f:
                    line = raw.decode(errors="replace")
                    epoch = sum(1 for b in bounds if b <= offset)
                    offset += len(raw)
                    for pattern, is_first in ((FIRST_REPORT, True), (REPEAT_REPORT, False)):
                        m = pattern.search(line)
                        if m:
                            per_epoch[(m.group(1), epoch)] += 1
                            first[m.group(1)] += is_first
        for (uid, epoch), n in sorted(per_epoch.items()):
            s.check(
                n <= 1, f"transaction {uid} reported {n} times between cut {epoch} and the next"
            )
        for uid, n in sorted(first.items()):
            s.check(n <= 1, f"transaction {uid}: the SCU took its report as new {n} times")
        states = {tx["transaction_uid"]: tx["state"] for tx in self.scu_queries.transactions()}
        for uid in sorted(set(REQUESTED.findall(self.log_text()))):
            s.check(
                states.get(uid) in ("committed", "failed"),
                f"acknowledged N-ACTION {uid} never reported to the SCU"
                f" (SCU says {states.get(uid)})",
            )

    # -- after the last cut: settle, then check the live state ------------------------------

    def settle(self, timeout: float) -> None:
        """Wait until the SCP has no active transaction; restart the agent once (it finishes
        due deletions at start)."""
        if self.sender is not None:
            common.wait_or_kill(self.sender, 60)
        self.ensure_running()
        common.settle(self.scp_queries, self.agent, timeout)

    def check_final(self) -> None:
        s = self.summary
        problems = self.scp_queries.integrity_problems() + self.scu_queries.integrity_problems()
        s.check(not problems, f"after settling: integrity_check: {problems[:3]}")
        committed = self.scp_queries.committed_instances()
        index = {row["sop_instance_uid"]: row for row in self.scp_queries.instances()}
        for uid in sorted(committed):
            row = index.get(uid)
            s.check(row is not None and row["durable"] == 1, f"committed {uid} not durable")
            stored = self.data / row["path"] if row else None
            intact = stored is not None and stored.is_file() and sha256(stored) == row["sha256"]
            s.check(intact, f"committed {uid}: file missing or SHA-256 differs from the index")
            s.check(
                intact and dataset_digest(stored) == self.digests.get(uid),
                f"committed {uid}: stored dataset differs from what was sent",
            )
        scp = self.scp_queries.transactions()
        delivered = Counter(
            tx["transaction_uid"]
            for tx in scp
            if tx["state"] == "delivered" and not tx["duplicate_of"]
        )
        for tx in scp:
            uid = tx["transaction_uid"]
            s.check(tx["state"] in ("delivered", "given_up"), f"SCP {uid} left {tx['state']}")
            s.check(delivered[uid] <= 1, f"transaction {uid} delivered {delivered[uid]} times")
        common.check_no_unjustified_deletion(s, self.sent_paths, committed, self.scu_queries)

    def stop(self) -> None:
        try:
            if self.sender is not None and self.sender.poll() is None:
                self.sender.kill()
                self.sender.wait()
            for service in (self.scp, self.agent):
                service.stop()
        finally:
            self.fs.unmount()


def line(cuts: int, summary: Summary) -> str:
    return (
        f"{cuts} power cuts, {summary.checks} invariants checked,"
        f" {len(summary.violations)} violations"
    )


def run_power_cuts(
    cuts: int, seed: int, workdir: Path, max_seconds: float = 3600
) -> tuple[int, Summary]:
    campaign = PowerCutCampaign(workdir, seed)
    try:
        campaign.fs.mount()
        campaign.ensure_running()
        common.run_rounds(
            lambda: campaign.cuts >= cuts,
            campaign.power_round,
            lambda: f"{campaign.cuts} cuts",
            campaign.summary.violations,
            max_seconds,
        )
        campaign.settle(timeout=120)
        campaign.check_final()
        campaign.check_reports_once()
        return campaign.cuts, campaign.summary
    finally:
        campaign.stop()


def main() -> int:
    args = common.campaign_parser(__doc__, "cuts", 50, "power cuts to make").parse_args()
    workdir = common.campaign_workdir(args.workdir, "stgcmt-power-")
    cuts, summary = run_power_cuts(args.cuts, args.seed, workdir)
    fields = {"cuts": cuts, "checks": summary.checks, "dropped": summary.dropped}
    lines = [
        f"the cuts dropped unsynced changes of {summary.dropped} files and directories",
        f"{line(cuts, summary)} (seed {args.seed}, logs in {workdir})",
    ]
    return common.report(args.json, fields, summary.violations, args.seed, lines)


if __name__ == "__main__":
    sys.exit(main())
