"""``python -m bench --cluster``: ingest and commitment with 1, 2 and 3 ``stgcmt scp`` nodes on
one PostgreSQL database (one shared data dir), beside one node on SQLite, on 127.0.0.1.

Each run starts the nodes afresh (a new database, a new data dir), stores the same number of
new instances split evenly over the nodes (one DCMTK ``storescu`` association per node, all at
once), then asks each node at once for the commitment of the instances stored on the *next*
node (every N-ACTION references instances another node wrote, verified against the shared
index; reports on a new association to the reference peer). Figures: instances per second of
the ingest (first storescu start to last exit) and of the commitment (first N-ACTION on the wire
to last report reassembled), min / median / max over the runs.

A run in which the archive fails references it had acknowledged is no figure: the bench stops
and says which Failure Reasons the archive's own journal holds for them (and whether its index
holds those instances, durably), keeping the nodes' logs, journal and index in
``bench/results/cluster-failed-*``. The results JSON records the commit the nodes ran and any
uncommitted change under ``src/`` (the nodes import it from this working tree).

PostgreSQL is a private server started for the bench (tests/support/postgres.py: ``initdb`` in
a temp dir, Unix socket, free port) unless ``--database URL`` names an empty database the nodes
may fill (each run then empties it first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .dicomdata import InstanceSet, make_set
from .peer import ReferencePeer, Report
from .procs import BenchError, Children, dcmtk_env, free_port, run_parallel, wait_listening
from .servers import PEER_AET, SCU_AET, START_TIMEOUT

RESULTS = Path(__file__).resolve().parent / "results"
AET = "ARCHIVE"
ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


class ReferencesFailed(BenchError):
    """The archive failed references every one of which it had acknowledged (C-STORE
    Success): not a figure but a finding, whose evidence the run keeps."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench --cluster", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--instances", type=int, default=3000, help="instances per run (3000)")
    p.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    p.add_argument("--nodes", default="1,2,3", help="PostgreSQL node counts (1,2,3)")
    p.add_argument("--side", type=int, default=64, help="pixels per side of each image (64)")
    p.add_argument("--database", metavar="URL", help="an empty database to use (default: private)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    args = p.parse_args(argv)
    args.node_counts = [int(n) for n in args.nodes.split(",")]
    if args.instances < 1 or args.runs < 1 or min(args.node_counts) < 1:
        p.error("--instances, --runs and every node count must be at least 1")
    return args


class Database:
    """Where the PostgreSQL nodes keep their index and journal: a private server, or the
    given empty database (emptied before each run)."""

    def __init__(self, url: str | None) -> None:
        self._given = url
        self._server: Any = None

    def __enter__(self) -> Database:
        if self._given is None:
            sys.path.insert(0, str(TESTS))
            from support.postgres import PostgresCluster  # the tests' private server

            self._server = PostgresCluster().start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()

    def fresh(self) -> str:
        """An empty database's URL."""
        if self._server is not None:
            return str(self._server.url(self._server.create_database()))
        import psycopg

        assert self._given is not None
        with psycopg.connect(self._given, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        return self._given


def _toml(data_dir: Path, peer_port: int, database_url: str | None) -> str:
    """Defaults as shipped (checksum verification, reports on a new association)."""
    database = f'\n[database]\nurl = "{database_url}"\n' if database_url else ""
    return (
        f'[scp]\naet = "{AET}"\nbind = "127.0.0.1"\ndata_dir = "{data_dir}"\n\n'
        f'[[remote]]\naet = "{SCU_AET}"\nhost = "127.0.0.1"\nport = {free_port()}\n\n'
        f'[[remote]]\naet = "{PEER_AET}"\nhost = "127.0.0.1"\nport = {peer_port}\n{database}'
    )


def start_nodes(
    children: Children, workdir: Path, count: int, peer_port: int, database_url: str | None
) -> list[int]:
    """``count`` nodes of one archive (one data dir, one database); their ports."""
    config = workdir / "archive.toml"
    config.write_text(_toml(workdir / "data", peer_port, database_url))
    ports = []
    for number in range(count):
        port = free_port()
        argv = [sys.executable, "-m", "stgcmt", "scp", "--config", str(config), "--port", str(port)]
        argv += ["--node", f"node-{number + 1}"]
        process = children.start(argv, log=workdir / f"node-{number + 1}.log")
        wait_listening(port, process, START_TIMEOUT, f"node {number + 1}")
        ports.append(port)
    return ports


def _split(instances: InstanceSet, parts: int, folder: Path) -> list[InstanceSet]:
    """The set in ``parts`` folders (hard links), one per node."""
    sets = []
    for part in range(parts):
        sub = folder / f"part-{part}"
        sub.mkdir(parents=True)
        refs = instances.refs[part::parts]
        for index, path in enumerate(instances.paths[part::parts]):
            os.link(path, sub / f"{index:06d}.dcm")
        sets.append(InstanceSet(sub, refs, instances.total_bytes * len(refs) // instances.count))
    return sets


def ingest(ports: list[int], sets: list[InstanceSet], storescu: str, log: Path) -> float:
    """storescu into every node at once; wall seconds."""
    argvs = [
        [storescu, "-aet", SCU_AET, "-aec", AET, "+sd", "127.0.0.1", str(port), str(s.folder)]
        for port, s in zip(ports, sets, strict=True)
    ]
    with open(log, "ab") as out:
        seconds, codes = run_parallel(argvs, env=dcmtk_env(), timeout=900, log=out)
    if any(codes):
        raise BenchError(f"storescu exited {codes} (log {log})")
    return seconds


def commit(peer: ReferencePeer, ports: list[int], sets: list[InstanceSet], tag: str) -> float:
    """One N-ACTION per node at once, each for the instances stored on the next node; wall
    seconds from the first N-ACTION sent to the last report, every reference committed."""
    reports: list[Report] = []
    errors: list[BaseException] = []

    def request(node: int) -> None:
        refs = list(sets[(node + 1) % len(sets)].refs)
        try:
            reports.append(peer.request(ports[node], AET, f"2.25.{tag}{node}", refs))
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(len(ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"commitment failed: {errors[0]}")
    failed = sum(r.failed for r in reports)
    if failed:
        raise ReferencesFailed(f"{failed} references failed: not a commitment figure")
    first_sent = min(r.received_at - r.latency_s for r in reports)
    return max(r.received_at for r in reports) - first_sent


def one_run(
    config: tuple[str, int],
    args: argparse.Namespace,
    db: Database,
    peer: ReferencePeer,
    workdir: Path,
    storescu: str,
) -> dict[str, float]:
    backend, nodes = config
    url = db.fresh() if backend == "postgresql" else None
    try:
        with Children() as children:
            ports = start_nodes(children, workdir, nodes, peer.port, url)
            instances = make_set(workdir / "instances", args.instances, args.side)
            sets = _split(instances, nodes, workdir / "split")
            ingest_s = ingest(ports, sets, storescu, workdir / "storescu.log")
            commit_s = commit(peer, ports, sets, str(int(time.time() * 1000)))
    except ReferencesFailed as exc:  # the nodes have stopped: their logs are complete
        kept = keep_evidence(workdir, args.out)
        why = failure_reasons(workdir / "data", url)
        raise BenchError(
            f"{exc} ({why}); {tree_note()}node logs and journal kept in {kept}"
        ) from exc
    return {"ingest_per_s": args.instances / ingest_s, "commit_per_s": args.instances / commit_s}


def failure_reasons(data_dir: Path, database_url: str | None) -> str:
    """What the archive's own journal says of each failed reference: its Failure Reason and
    whether the index holds the instance (and durably), counted."""
    from stgcmt.dicom.status import describe_status
    from stgcmt.storage.backends import open_scp_queries

    queries = open_scp_queries(database_url, data_dir)
    reasons: Counter[str] = Counter()
    for tx in queries.transactions():
        for ref in (queries.transaction(tx["id"]) or {}).get("references", []):
            if ref["failure_reason"] != 0:
                held = "not indexed" if ref["durable"] is None else f"durable={ref['durable']}"
                reasons[f"{describe_status(ref['failure_reason'])}, {held}"] += 1
    return "; ".join(f"{n} x {why}" for why, n in reasons.most_common()) or "none in journal"


def keep_evidence(workdir: Path, out: Path) -> Path:
    """The failed run's logs and the SQLite index and journal (not the instances) copied
    beside the results: the run's folder is temporary."""
    kept = out / f"cluster-failed-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(workdir, kept, ignore=shutil.ignore_patterns("instances", "split"))
    return kept


def tree_state() -> dict[str, Any]:
    """The commit the nodes run, and the files under src/ that differ from it: the nodes
    import src/ from this working tree, so what a run shows (a figure, a failure) may come
    from an uncommitted edit in it rather than from the commit."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *argv], capture_output=True, text=True, timeout=30
        )
        return done.stdout.rstrip("\n")

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "src")}


def tree_note() -> str:
    """A warning for the failure message when src/ has uncommitted changes."""
    dirty = tree_state()["dirty"]
    return f"src/ differed from HEAD: {' '.join(dirty.split())}; " if dirty else ""


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    rows = [f"{'configuration':<22} {'ingest instances/s':>26} {'commitment refs/s':>26}"]
    for name, figures in results.items():
        cells = [
            f"{f['median']:>8.0f} ({f['min']:.0f}-{f['max']:.0f})"
            for f in (figures["ingest_per_s"], figures["commit_per_s"])
        ]
        rows.append(f"{name:<22} {cells[0]:>26} {cells[1]:>26}")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from .deps import ensure_dcmtk

    storescu = ensure_dcmtk("storescu")
    configs = [("sqlite", 1)] + [("postgresql", n) for n in args.node_counts]
    samples: dict[str, list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="stgcmt-bench-cluster-") as tmp,
        Database(args.database) as db,
    ):
        peer = ReferencePeer(PEER_AET).start()
        try:
            for run in range(args.runs):
                for config in configs:
                    name = f"{config[1]} node{'s' if config[1] > 1 else ''} on {config[0]}"
                    workdir = Path(tmp) / f"{config[0]}-{config[1]}-{run}"
                    workdir.mkdir()
                    sample = one_run(config, args, db, peer, workdir, storescu)
                    samples.setdefault(name, []).append(sample)
                    print(f"run {run + 1}/{args.runs} {name}: {sample}", flush=True)
        except BenchError as exc:
            print(f"bench --cluster: {exc}", file=sys.stderr)
            return 1
        finally:
            peer.stop()
    results = {
        name: {key: spread([s[key] for s in runs]) for key in runs[0]}
        for name, runs in samples.items()
    }
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "command": "python -m bench --cluster " + " ".join(argv),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "instances": args.instances,
        "runs": args.runs,
        "tree": tree_state(),
        "results": results,
        "raw": samples,
    }
    out.write_text(json.dumps(document, indent=2))
    print(f"written {out}")
    return 0
