#!/usr/bin/env python3
"""Crash campaign: run our SCP, SCU agent and ``stgcmt send`` under load, SIGKILL one of them
while it is working (and at every crash point of ``stgcmt.faults``), restart, and check that
nothing was lost and every report reached the modality.

    python tools/crash_campaign.py --kills 100 --seed 11  # a longer campaign
    python tools/crash_campaign.py --kills 30 --seed 7    # what the test suite runs

Every DICOM association of the campaign goes through a relay (``Wire``) that reads the DIMSE
commands crossing it: what is in flight (C-STORE, N-ACTION, N-EVENT-REPORT awaiting its
response) and every N-EVENT-REPORT the modality side (``send`` or the agent) received, with its
Transaction UID and the answer it gave.

Kills, each counted once, when its process is reaped with SIGKILL as the cause:

* crash points: every ``crash_point("...")`` call under ``src/stgcmt`` is armed (probability
  1) in the processes that can reach it until it has fired once (the point appends its name to
  ``STGCMT_CRASH_LOG`` before dying); later restarts re-arm a random point now and then;
* timer kills: one target (SCP, agent or send) per round, signalled only while it has work in
  flight (a DIMSE request to or from it unanswered on the wire, or for the SCP a transaction in
  ``received``/``verifying``), at a random delay into that busy phase; a round whose target
  stays idle kills nothing and is reported as such.

After the last kill everything is restarted unarmed and left to settle, then the invariants are
checked:

1. every instance the SCP reported committed is in its index, durable, and its file is intact
   (SHA-256 of the stored file as indexed, and the dataset bytes equal to what was sent);
2. every SCP transaction is delivered (or given up), none twice in the journal, and the SCU
   recorded each one the SCP acknowledged;
3. on the wire: every N-ACTION the SCP acknowledged (Success N-ACTION-RSP) has its Transaction
   UID in at least one N-EVENT-REPORT the modality received and answered with Success; a report
   answered Success is received again only if the SCP that sent it died by SIGKILL after sending
   it and before recording the delivery (at most ``REPEAT_WINDOW`` seconds after the answer);
   repeats after a report that got no answer or a failure answer are ordinary retries;
4. the SCU never deleted a file whose instance was not reported committed, and no delete/move
   is left due;
5. every SQLite database passes ``PRAGMA integrity_check``;
6. every crash point fired at least once.

Prints the count per crash point, the kills and how many hit work in flight, the wire counts,
and one summary line; exit status 1 on any violation. Only 127.0.0.1 is used; every process
started is stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import stgcmt
from stgcmt import faults
from stgcmt.storage.backends import open_scp_queries
from stgcmt.storage.queries import SqliteScuQueries

from campaign_common import (
    Checks,
    campaign_parser,
    campaign_workdir,
    check_no_unjustified_deletion,
    report,
    run_rounds,
    settle,
)

LOCALHOST = "127.0.0.1"
SCP_AET, SCU_AET = "ARCHIVE", "MODALITY"
REPEAT_WINDOW = 2.0
"""An SCP death explains a repeated report if it came after the report was sent and at most this
many seconds after its answer (the delivery is recorded milliseconds after the answer; the
answer may reach the relay after the SCP died, never reaching the SCP)."""
BUSY_DELAY = {"scp": 0.05, "send": 0.05, "agent": 0.004}
"""A timer kill lands after a random 0 to this many seconds of its target's busy time (the
agent is busy only while it records and acts on one report: a few milliseconds)."""
REARM = 0.15
"""Once every point has fired: the chance that a restart arms one random point (at 0.5)."""

C_STORE_RQ, N_EVENT_REPORT_RQ, N_ACTION_RQ = 0x0001, 0x0100, 0x0130
COMMANDS = {0x0001: "C-STORE", 0x0030: "C-ECHO", 0x0100: "N-EVENT-REPORT", 0x0130: "N-ACTION"}
TRANSACTION_UID_TAG = b"\x08\x00\x95\x11"


def crash_points_in_code() -> dict[str, list[str]]:
    """Every ``crash_point("NAME")`` call under the installed package: name -> where."""
    root = Path(stgcmt.__file__).parent
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        if path.name == "faults.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for name in re.findall(r"crash_point\(\"([a-z_.]+)\"\)", line):
                found[name].append(f"{path.relative_to(root.parent)}:{lineno}")
    return dict(found)


def processes_for(point: str) -> tuple[str, ...]:
    """Which campaign processes can reach a point (the reports/purge code runs in both)."""
    if point.startswith("scp."):
        return ("scp",)
    if point.startswith("scu.send."):
        return ("send",)
    return ("agent", "send")


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


# -- the wire -----------------------------------------------------------------------------------


def parse_command(data: bytes) -> dict[int, bytes]:
    """A DIMSE command set (always Implicit VR Little Endian): element (0000,xxxx) -> value."""
    elements: dict[int, bytes] = {}
    i = 0
    while i + 8 <= len(data):
        group = int.from_bytes(data[i : i + 2], "little")
        element = int.from_bytes(data[i + 2 : i + 4], "little")
        length = int.from_bytes(data[i + 4 : i + 8], "little")
        if group == 0:
            elements[element] = data[i + 8 : i + 8 + length]
        i += 8 + length
    return elements


def us(value: bytes | None) -> int | None:
    return int.from_bytes(value[:2], "little") if value and len(value) >= 2 else None


def transaction_uid(dataset: bytes) -> str | None:
    """The top-level Transaction UID (0008,1195) of a commitment data set, Implicit or Explicit
    VR Little Endian (it precedes every sequence, so its first occurrence is the top level)."""
    at = dataset.find(TRANSACTION_UID_TAG)
    if at < 0:
        return None
    if dataset[at + 4 : at + 6] == b"UI":
        length, start = int.from_bytes(dataset[at + 6 : at + 8], "little"), at + 8
    else:
        length, start = int.from_bytes(dataset[at + 4 : at + 8], "little"), at + 8
    return dataset[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")


@dataclass
class Receipt:
    """One N-EVENT-REPORT-RQ that reached the modality side, and the answer it gave."""

    uid: str
    at: float
    scp_pid: int | None
    conn: int
    message_id: int
    status: int | None = None
    answered_at: float | None = None


class Wire:
    """What crossed the relays: requests in flight per connection, N-ACTIONs acknowledged,
    N-EVENT-REPORTs received. Events are also appended to ``wire.jsonl``."""

    def __init__(self, log_path: Path) -> None:
        self.changed = threading.Condition()
        self.outstanding: dict[int, dict[tuple[str, int], tuple[int, int]]] = {}
        self.receipts: list[Receipt] = []
        self.actions: dict[tuple[int, int], str] = {}  # (conn, message id) -> Transaction UID
        self.acknowledged: Counter[str] = Counter()
        self.log = open(log_path, "a")  # noqa: SIM115 - closed in close()
        self.relay_of: dict[int, str] = {}
        self.parse_errors: list[str] = []
        self._conn_ids = iter(range(1, 1 << 62))

    def close(self) -> None:
        self.log.close()

    def new_conn(self, relay: str) -> int:
        with self.changed:
            conn = next(self._conn_ids)
            self.outstanding[conn] = {}
            self.relay_of[conn] = relay
            return conn

    def end_conn(self, conn: int) -> None:
        with self.changed:
            self.outstanding.pop(conn, None)
            self.changed.notify_all()

    def busy(self, relay: str) -> list[str]:
        """Commands in flight on that relay's connections (caller holds no lock)."""
        with self.changed:
            return [
                f"{COMMANDS.get(field_, hex(field_))}"
                for conn, pending in self.outstanding.items()
                if self.relay_of.get(conn) == relay
                for field_, _ in pending.values()
            ]

    def _event(self, **fields: object) -> None:
        if not self.log.closed:
            self.log.write(json.dumps(fields) + "\n")

    def command(self, conn: int, relay: str, direction: str, cmd: dict[int, bytes]) -> None:
        field_ = us(cmd.get(0x0100))
        if field_ is None:
            return
        now = time.time()
        with self.changed:
            pending = self.outstanding.setdefault(conn, {})
            if not field_ & 0x8000:
                message_id = us(cmd.get(0x0110)) or 0
                pending[(direction, message_id)] = (field_, message_id)
            else:
                responded = us(cmd.get(0x0120)) or 0
                other = "down" if direction == "up" else "up"
                request = pending.pop((other, responded), None)
                status = us(cmd.get(0x0900))
                if request and request[0] == N_EVENT_REPORT_RQ:
                    for receipt in reversed(self.receipts):
                        if receipt.conn == conn and receipt.message_id == responded:
                            receipt.status, receipt.answered_at = status, now
                            self._event(event="report-answered", uid=receipt.uid, status=status)
                            break
                if request and request[0] == N_ACTION_RQ:
                    uid = self.actions.pop((conn, responded), None)
                    if uid and status == 0:
                        self.acknowledged[uid] += 1
                    self._event(event="n-action-answered", uid=uid, status=status)
            self.changed.notify_all()

    def dataset(
        self, conn: int, direction: str, field_: int, message_id: int, data: bytes, scp_pid: int
    ) -> None:
        uid = transaction_uid(data)
        if uid is None:
            return
        now = time.time()
        with self.changed:
            if field_ == N_EVENT_REPORT_RQ:
                self.receipts.append(Receipt(uid, now, scp_pid, conn, message_id))
                self._event(event="report-received", uid=uid, scp_pid=scp_pid, at=now)
            elif field_ == N_ACTION_RQ:
                self.actions[(conn, message_id)] = uid
                self._event(event="n-action", uid=uid, at=now)


class _Stream:
    """One direction of one relayed connection: PDUs in, DIMSE commands and data sets out."""

    def __init__(self, wire: Wire, relay: Relay, conn: int, direction: str, scp_pid: int):
        self.wire, self.relay, self.conn, self.direction = wire, relay, conn, direction
        self.scp_pid = scp_pid
        self.buffer = bytearray()
        self.command_bytes = bytearray()
        self.data_bytes = bytearray()
        self.data_for: tuple[int, int] | None = None  # (command field, message id)

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while len(self.buffer) >= 6:
            length = int.from_bytes(self.buffer[2:6], "big")
            if len(self.buffer) < 6 + length:
                return
            pdu_type, body = self.buffer[0], bytes(self.buffer[6 : 6 + length])
            del self.buffer[: 6 + length]
            if pdu_type == 0x04:
                self._p_data(body)

    def _p_data(self, body: bytes) -> None:
        i = 0
        while i + 6 <= len(body):
            length = int.from_bytes(body[i : i + 4], "big")
            control, fragment = body[i + 5], body[i + 6 : i + 4 + length]
            i += 4 + length
            if control & 1:
                self.command_bytes += fragment
                if control & 2:
                    cmd = parse_command(bytes(self.command_bytes))
                    self.command_bytes.clear()
                    self.wire.command(self.conn, self.relay.name, self.direction, cmd)
                    field_ = us(cmd.get(0x0100))
                    wanted = field_ in (N_EVENT_REPORT_RQ, N_ACTION_RQ)
                    self.data_for = (
                        (field_, us(cmd.get(0x0110)) or 0) if wanted and field_ else None
                    )
            elif self.data_for is not None:
                self.data_bytes += fragment
                if control & 2:
                    field_, message_id = self.data_for
                    self.wire.dataset(
                        self.conn,
                        self.direction,
                        field_,
                        message_id,
                        bytes(self.data_bytes),
                        self.scp_pid,
                    )
                    self.data_bytes.clear()
                    self.data_for = None


class Relay:
    """A TCP relay on ``port`` to ``target`` that feeds both directions to the ``Wire``."""

    def __init__(self, name: str, wire: Wire, target: int, scp_pid: Callable[[], int]) -> None:
        self.name, self.wire, self.target, self.scp_pid = name, wire, target, scp_pid
        self.server = socket.create_server((LOCALHOST, 0))
        self.port = self.server.getsockname()[1]
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stopping = True
        self.server.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((LOCALHOST, self.target), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        conn = self.wire.new_conn(self.name)
        pid = self.scp_pid()
        up = _Stream(self.wire, self, conn, "up", pid)
        down = _Stream(self.wire, self, conn, "down", pid)
        done = threading.Event()

        def pump(src: socket.socket, dst: socket.socket, stream: _Stream) -> None:
            try:
                while chunk := src.recv(65536):
                    try:  # first: a response cannot be seen before its request
                        stream.feed(chunk)
                    except Exception as exc:  # a relay bug must not cut the association
                        self.wire.parse_errors.append(f"{type(exc).__name__}: {exc}")
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                if not done.is_set():
                    done.set()
                    self.wire.end_conn(conn)
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        other = threading.Thread(target=pump, args=(upstream, client, down), daemon=True)
        other.start()
        pump(client, upstream, up)
        other.join()
        client.close()
        upstream.close()


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Life:
    """One run of one process, from spawn to reaping."""

    name: str
    proc: subprocess.Popen
    armed: tuple[str, ...]
    signalled_at: float | None = None
    in_flight: list[str] = field(default_factory=list)
    cleanup: bool = False  # killed by the campaign's own shutdown: not a kill point
    reaped: bool = False
    died_at: float | None = None
    cause: str | None = None  # crash point name, "timer", or None (exited by itself)


class Service:
    """A long-running stgcmt process (scp or agent), restartable, optionally armed."""

    def __init__(self, campaign: Campaign, name: str, args: list[str], port: int) -> None:
        self.campaign, self.name, self.args, self.port = campaign, name, args, port
        self.log = campaign.workdir / f"{name}.log"
        self.life: Life | None = None

    def start(self, points: tuple[str, ...] = ()) -> None:
        with open(self.log, "ab") as log:
            self.life = self.campaign.spawn(
                self.name, [sys.executable, "-m", "stgcmt", *self.args], points, log
            )
        proc = self.life.proc
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if proc.poll() is not None:
                if self.campaign.reap(self.life) and self.life.cause:
                    return  # an armed point fired while resuming work: a kill, not a failure
                raise RuntimeError(f"{self.name} exited at start; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.life is not None and self.life.proc.poll() is None

    def stop(self) -> None:
        life = self.life
        if life is not None and life.proc.poll() is None:
            life.proc.send_signal(signal.SIGTERM)
            try:
                life.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                life.cleanup = True
                life.proc.kill()
                life.proc.wait()
        if life is not None:
            self.campaign.reap(life)


@dataclass
class Summary(Checks):
    kills: Counter = field(default_factory=Counter)  # "process:cause" -> SIGKILLs
    fired: Counter = field(default_factory=Counter)  # crash point -> times fired
    points: tuple[str, ...] = ()
    in_flight: Counter = field(default_factory=Counter)  # what a timer kill interrupted
    timer_kills: int = 0
    timer_in_flight: int = 0
    idle_rounds: int = 0
    wire: dict[str, int] = field(default_factory=dict)
    repeat_causes: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    seconds: float = 0.0

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    @property
    def kills_in_flight(self) -> int:
        """Crash points always fire mid-work; timer kills count only if work was in flight."""
        return sum(self.fired.values()) + self.timer_in_flight

    def lines(self) -> list[str]:
        out = [f"crash point {name}: fired {self.fired[name]}" for name in self.points]
        shown = ", ".join(f"{k} {v}" for k, v in sorted(self.in_flight.items()))
        out.append(
            f"timer kills: {self.timer_kills}, {self.timer_in_flight} with work in flight"
            f" ({shown or 'none'}); {self.idle_rounds} timer rounds found the target idle and"
            " killed nothing"
        )
        out.append(f"kills by process and cause: {dict(sorted(self.kills.items()))}")
        if self.wire:
            out.append(
                "on the wire: {acknowledged} N-ACTIONs acknowledged, {received} N-EVENT-REPORTs"
                " received ({answered} answered Success), {repeats} repeats after a Success"
                " answer, {retries} re-sends after no or a failure answer".format(**self.wire)
                + f"; repeats by the SCP death before them: {self.repeat_causes or 'none'}"
            )
        out.append(self.line())
        return out

    def line(self) -> str:
        return (
            f"crash campaign: {self.total_kills} kills ({sum(self.fired.values())} at crash"
            f" points, {self.timer_kills} by timer; {self.kills_in_flight} with work in flight),"
            f" {self.checks} invariants checked, {len(self.violations)} violations"
        )


def sqlite_only(where: list[str]) -> bool:
    """Whether a crash point is called only in the SQLite backend's modules."""
    return all("/sqlite" in place.split(":")[0] for place in where)


class Campaign:
    def __init__(self, workdir: Path, seed: int, database_url: str | None = None) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.data = workdir / "archive"
        self.journal = workdir / "scu-journal.sqlite"
        self.database_url = database_url
        self.scp_queries = open_scp_queries(database_url, self.data)
        self.scu_queries = SqliteScuQueries(self.journal)
        self.originals = workdir / "originals"
        self.outbox = workdir / "outbox"
        for folder in (self.originals, self.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self.digests: dict[str, str] = {}  # SOP Instance UID -> dataset SHA-256
        self.sent_paths: dict[str, Path] = {}
        self.crash_log = workdir / "crash-points.log"
        self.code_points = crash_points_in_code()
        self.points = tuple(
            p
            for p in faults.POINTS
            if p in self.code_points and not (database_url and sqlite_only(self.code_points[p]))
        )
        self.summary = Summary(points=self.points)
        self.lives: list[Life] = []
        self.final = False  # settling: restarts are unarmed
        self.wire = Wire(workdir / "wire.jsonl")
        self.scp_port, self.agent_port = free_port(), free_port()
        self.scp_relay = Relay("scp", self.wire, self.scp_port, self.scp_pid)
        self.agent_relay = Relay("agent", self.wire, self.agent_port, self.scp_pid)
        config = workdir / "archive.toml"
        config.write_text(
            f'[scp]\naet = "{SCP_AET}"\nbind = "{LOCALHOST}"\nport = {self.scp_port}\n'
            f'data_dir = "{self.data}"\n\n'
            f'[[remote]]\naet = "{SCU_AET}"\nhost = "{LOCALHOST}"\n'
            f"port = {self.agent_relay.port}\n\n"
            "[retry]\nstart = 0.2\ncap = 1.0\ngive_up_after = 86400\n"
            + (f'\n[database]\nurl = "{database_url}"\n' if database_url else "")
        )
        self.scp = Service(self, "scp", ["scp", "--config", str(config)], self.scp_port)
        self.agent = Service(
            self,
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
        )

    def scp_pid(self) -> int:
        return self.scp.life.proc.pid if self.scp.life else 0

    # -- processes, and the one place a kill is counted ------------------------------------------

    def arming(self, process: str) -> tuple[str, ...]:
        """Crash points for a new process: every one it can reach that has not fired yet (at
        probability 1); once all have, now and then one random point at 0.5."""
        if self.final:
            return ()
        unfired = [
            p for p in self.points if not self.summary.fired[p] and process in processes_for(p)
        ]
        if unfired:
            return tuple(f"{p}=1" for p in unfired)
        reachable = [p for p in self.points if process in processes_for(p)]
        if reachable and self.rng.random() < REARM:
            return (f"{self.rng.choice(reachable)}=0.5",)
        return ()

    def spawn(self, name: str, argv: list[str], armed: tuple[str, ...], log: IO[bytes]) -> Life:
        env = {
            **os.environ,
            "STGCMT_CRASH_POINTS": ",".join(armed),
            "STGCMT_CRASH_LOG": str(self.crash_log),
        }
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        life = Life(name, proc, tuple(a.partition("=")[0] for a in armed))
        self.lives.append(life)
        return life

    def fired_markers(self) -> dict[int, tuple[str, float]]:
        """pid -> (crash point, time) from the lines the points wrote before dying."""
        markers: dict[int, tuple[str, float]] = {}
        if self.crash_log.exists():
            for line in self.crash_log.read_text().splitlines():
                name, pid, at = line.split()
                markers[int(pid)] = (name, float(at))
        return markers

    def reap(self, life: Life) -> bool:
        """If the process has ended, account for it exactly once: a SIGKILL as the cause of
        death is a kill (a crash point if it wrote its marker, else our timer's signal).
        Returns whether it has ended."""
        if life.reaped:
            return True
        status = life.proc.poll()
        if status is None:
            return False
        life.reaped = True
        if status != -signal.SIGKILL or life.cleanup:
            return True
        marker = self.fired_markers().get(life.proc.pid)
        s = self.summary
        if marker is not None:
            life.cause, life.died_at = marker
            s.fired[life.cause] += 1
        elif life.signalled_at is not None:
            life.cause, life.died_at = "timer", life.signalled_at
            s.timer_kills += 1
            if life.in_flight:
                s.timer_in_flight += 1
                s.in_flight.update(set(life.in_flight))
        else:
            s.violations.append(f"{life.name} (pid {life.proc.pid}) died of a SIGKILL nobody sent")
            return True
        s.kills[f"{life.name}:{life.cause}"] += 1
        return True

    def signal_kill(self, life: Life, work: list[str]) -> None:
        """SIGKILL a process that is running with ``work`` in flight (counted when reaped)."""
        if life.proc.poll() is not None:
            return
        life.signalled_at, life.in_flight = time.time(), work
        life.proc.send_signal(signal.SIGKILL)
        life.proc.wait(timeout=30)
        self.reap(life)

    def ensure_running(self) -> None:
        for service in (self.scp, self.agent):
            for _ in range(len(self.points) + 3):  # an armed point may fire while resuming
                if service.alive():
                    break
                if service.life is not None:
                    self.reap(service.life)
                service.start(self.arming(service.name))

    # -- what is in flight ----------------------------------------------------------------------

    def scp_working(self) -> list[str]:
        """'verification' while a transaction is journaled but not yet verified."""
        if self.database_url:
            return self._working_in_database()
        try:
            db = sqlite3.connect(
                f"file:{self.scp_queries.journal_path}?mode=ro", uri=True, timeout=0.05
            )
            try:
                (n,) = db.execute(
                    "SELECT count(*) FROM transactions WHERE state IN ('received', 'verifying')"
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return []
        return ["verification"] if n else []

    def _working_in_database(self) -> list[str]:
        try:
            found = [
                self.scp_queries.find_transactions(state=s, limit=1)["total"]
                for s in ("received", "verifying")
            ]
        except OSError:
            return []
        return ["verification"] if any(found) else []

    def busy(self, target: str) -> list[str]:
        if target == "send":
            return self.wire.busy("scp")
        if target == "agent":
            return self.wire.busy("agent")
        return self.wire.busy("scp") + self.wire.busy("agent") + self.scp_working()

    def timer_kill(self, target: str, sender: Life) -> None:
        """SIGKILL ``target`` once it has been busy for a random share of its ``BUSY_DELAY``
        (busy time, summed over its busy phases), and only at a moment it is busy; if it
        stays idle (or dies otherwise) this round, kill nothing."""
        service = None if target == "send" else getattr(self, target)
        life = sender if service is None else service.life
        wanted = self.rng.uniform(0.0, BUSY_DELAY[target])
        deadline = time.monotonic() + 6
        busy_for, last = 0.0, time.monotonic()
        while life is not None and life.proc.poll() is None and time.monotonic() < deadline:
            work = self.busy(target)
            now = time.monotonic()
            if work:
                busy_for += now - last
                if busy_for >= wanted:
                    self.signal_kill(life, work)
                    return
            elif sender.proc.poll() is not None and not self.scp_queries.active_transactions():
                break  # nothing more will happen this round
            last = now
            with self.wire.changed:
                self.wire.changed.wait(0.002)
        self.summary.idle_rounds += 1

    # -- one round: a send, and a kill while something works --------------------------------------

    def batch(self, index: int) -> Path:
        folder = self.outbox / f"round-{index:04d}"
        folder.mkdir()
        for _ in range(self.rng.randint(2, 8)):
            path = make_instance(folder, self.rng)
            shutil.copy2(path, self.originals / path.name)
            self.digests[path.stem] = dataset_digest(path)
            self.sent_paths[path.stem] = path
        return folder

    def send(self, folder: Path) -> Life:
        args = [
            sys.executable,
            "-m",
            "stgcmt",
            "send",
            f"{SCP_AET}@{LOCALHOST}:{self.scp_relay.port}",
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
        with open(self.workdir / "send.log", "ab") as log:
            return self.spawn("send", args, self.arming("send"), log)

    def round(self, index: int) -> None:
        sender = self.send(self.batch(index))
        self.timer_kill(self.rng.choice(("scp", "agent", "send")), sender)
        try:
            sender.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sender.cleanup = True
            sender.proc.kill()
            sender.proc.wait()
        self.reap(sender)
        self.ensure_running()

    # -- settle, then check ------------------------------------------------------------------------

    def settle(self, timeout: float) -> None:
        """Restart everything unarmed and wait until the SCP has no active transaction."""
        self.final = True
        for service in (self.scp, self.agent):
            if service.life is not None and service.life.armed:
                service.stop()
        self.ensure_running()
        settle(self.scp_queries, self.agent, timeout)

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
        self._check_wire()
        self._check_no_unjustified_deletion(committed)
        self._check_crash_points()
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

    def _check_wire(self) -> None:
        """Every acknowledged N-ACTION reached the modality as an N-EVENT-REPORT it answered
        with Success; a report answered Success came again only after the SCP that sent it was
        SIGKILLed between that answer and recording the delivery."""
        s = self.summary
        with self.wire.changed:
            receipts = list(self.wire.receipts)
            acknowledged = Counter(self.wire.acknowledged)
        journal = self.scp_queries.transactions()
        rows = Counter(tx["transaction_uid"] for tx in journal)
        given_up = {tx["transaction_uid"] for tx in journal if tx["state"] == "given_up"}
        scp_deaths = {
            life.proc.pid: life for life in self.lives if life.name == "scp" and life.cause
        }
        s.check(not self.wire.parse_errors, f"relay could not parse: {self.wire.parse_errors[:3]}")
        by_uid: dict[str, list[Receipt]] = defaultdict(list)
        for receipt in receipts:
            by_uid[receipt.uid].append(receipt)
        for uid in acknowledged:
            s.check(
                any(r.status == 0 for r in by_uid.get(uid, [])) or uid in given_up,
                f"acknowledged N-ACTION {uid}: no N-EVENT-REPORT answered Success on the wire",
            )
        repeats: Counter[str] = Counter()
        retries = 0
        for uid, got in by_uid.items():
            successes = [r for r in got if r.status == 0]
            retries += len(got) - len(successes)
            budget = max(rows[uid], 1)  # one report per journaled request with this UID
            for n, receipt in enumerate(successes):
                if n >= rows[uid]:
                    previous = successes[n - 1]
                    death = scp_deaths.get(previous.scp_pid or -1)
                    repeats[death.cause if death and death.cause else "unexplained"] += 1
                s.check(
                    budget > 0,
                    f"Transaction UID {uid} received and answered Success {len(successes)}"
                    f" times for {rows[uid]} journaled request(s), not explained by an SCP crash",
                )
                budget -= 1
                death = scp_deaths.get(receipt.scp_pid or -1)
                if (
                    death is not None
                    and death.died_at is not None
                    and receipt.at <= death.died_at
                    and death.died_at <= (receipt.answered_at or receipt.at) + REPEAT_WINDOW
                ):
                    budget += 1  # its sender may have died before recording the delivery
        s.wire = {
            "acknowledged": sum(acknowledged.values()),
            "received": len(receipts),
            "answered": sum(1 for r in receipts if r.status == 0),
            "repeats": sum(repeats.values()),
            "retries": retries,
        }
        s.repeat_causes = dict(repeats)

    def _check_no_unjustified_deletion(self, committed: set[str]) -> None:
        check_no_unjustified_deletion(self.summary, self.sent_paths, committed, self.scu_queries)

    def _check_crash_points(self) -> None:
        s = self.summary
        for name in faults.POINTS:
            s.check(
                name in self.code_points,
                f"crash point {name} is in stgcmt.faults.POINTS but no code calls it",
            )
        for name, where in self.code_points.items():
            s.check(
                name in faults.POINTS,
                f"crash_point({name!r}) at {', '.join(where)} is not in stgcmt.faults.POINTS",
            )
        for name in self.points:
            s.check(s.fired[name] > 0, f"crash point {name} never fired")

    def stop(self) -> None:
        for service in (self.scp, self.agent):
            service.stop()
        for life in self.lives:
            if life.proc.poll() is None:
                life.cleanup = True
                life.proc.kill()
                life.proc.wait()
        self.scp_relay.stop()
        self.agent_relay.stop()
        self.wire.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_campaign(
    kills: int,
    seed: int,
    workdir: Path,
    max_seconds: float = 3600,
    database_url: str | None = None,
) -> Summary:
    """Rounds until ``kills`` SIGKILLs were counted and every crash point fired (or the time
    limit: a violation), then settle and check. ``database_url``: the SCP on PostgreSQL."""
    campaign = Campaign(workdir, seed, database_url)
    summary = campaign.summary
    started = time.monotonic()
    try:
        campaign.ensure_running()
        summary.rounds = run_rounds(
            lambda: summary.total_kills >= kills and all(summary.fired[p] for p in campaign.points),
            campaign.round,
            lambda: f"{summary.total_kills} kills",
            summary.violations,
            max_seconds,
        )
        campaign.settle(timeout=120)
        campaign.check()
        summary.seconds = time.monotonic() - started
        return summary
    finally:
        campaign.stop()


def main() -> int:
    parser = campaign_parser(__doc__, "kills", 200, "SIGKILLs to reach")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="run the SCP on this (empty) PostgreSQL database (default: SQLite in the workdir)",
    )
    args = parser.parse_args()
    workdir = campaign_workdir(args.workdir, "stgcmt-crash-")
    summary = run_campaign(args.kills, args.seed, workdir, database_url=args.database)
    fields = {
        "kills": dict(summary.kills),
        "fired": {p: summary.fired[p] for p in summary.points},
        "timer_kills": summary.timer_kills,
        "timer_kills_in_flight": summary.timer_in_flight,
        "in_flight": dict(summary.in_flight),
        "idle_rounds": summary.idle_rounds,
        "wire": summary.wire,
        "repeat_causes": summary.repeat_causes,
        "checks": summary.checks,
    }
    replay = f"seed {args.seed}, logs in {workdir}"
    tail = f"({summary.rounds} rounds in {summary.seconds:.0f} s, {replay})"
    return report(args.json, fields, summary.violations, args.seed, [*summary.lines(), tail])


if __name__ == "__main__":
    sys.exit(main())
