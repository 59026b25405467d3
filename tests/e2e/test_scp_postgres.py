"""The SCP on PostgreSQL, end to end over real DICOM: one node in-process, ``stgcmt scp
--database URL`` as users run it, and three nodes of one archive (one database, one data dir):
store on one node, commit on another; the node holding a report's lease killed with SIGKILL;
the database server restarted under running nodes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from pydicom.uid import generate_uid

from stgcmt.config import DatabaseConfig
from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.status import (
    CLASS_INSTANCE_CONFLICT,
    DUPLICATE_TRANSACTION_UID,
    NO_SUCH_OBJECT_INSTANCE,
)
from stgcmt.storage.postgres.queries import PgScpQueries
from stgcmt.storage.postgres.schema import LATEST

from support.cluster import Cluster, HoldingRelay
from support.common import (
    CT_IMAGE,
    LOCALHOST,
    PYTHON,
    SECONDARY_CAPTURE,
    free_port,
    make_dataset,
    remote,
    wait_for,
    write_instances,
)
from support.http import Client, scp_with_http
from support.pynetdicom_peer import Modality, refs_of, report_content

REPORT_WAIT = 30


def _lease_config(folder: Path) -> Path:
    """A configuration file with a short lease (4 s), so that takeovers are quick to reach."""
    config = folder / "archive.toml"
    config.write_text("[database]\nlease = 4.0\n")
    return config


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, modality: Modality):
    """Nodes of the archive ``ARCHIVE`` reporting to the modality through a relay (which a
    test may make hold connections); started by ``cluster.start(n)``, killed afterwards."""
    relay = HoldingRelay(modality.listen())
    config = _lease_config(tmp_path)
    made = Cluster(
        tmp_path,
        postgres_url,
        [
            "--config",
            str(config),
            "--aet",
            "ARCHIVE",
            "--remote",
            f"MODALITY@{LOCALHOST}:{relay.port}",
            "--retry-start",
            "0.2",
            "--retry-cap",
            "1",
            "--acse-timeout",
            "3",
            "-v",
        ],
        {},
    )
    made.relay = relay
    yield made
    made.stop()
    relay.stop()


def _committed(modality: Modality, index: int = 0) -> set[str]:
    return report_content(modality.reports[index][1])[0]


def _transaction(cluster: Cluster, uid: str) -> dict:
    return next(
        t for t in PgScpQueries(cluster.database_url).transactions() if t["transaction_uid"] == uid
    )


def _cpu_seconds(node) -> float:
    """User + system CPU time of a node's process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one node --------------------------------------------------------------------------------


def test_store_commit_and_report_on_postgresql(scp_factory, modality, instances, postgres_url):
    listen = modality.listen()
    scp = scp_factory(
        aet="ARCHIVE",
        remotes=(remote("MODALITY", listen),),
        database=DatabaseConfig(url=postgres_url, node="solo"),
    )
    paths = instances(3)
    assert modality.store(scp.port, paths) == [0, 0, 0]
    missing = Reference(SECONDARY_CAPTURE, generate_uid())
    assert modality.commit(scp.port, [*refs_of(paths), missing], "1.2.3.500") == 0
    assert modality.wait_report(REPORT_WAIT)
    committed, failed = report_content(modality.reports[0][1])
    assert committed == {p.stem for p in paths}
    assert failed == {missing.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE}
    # the rows are in PostgreSQL, durable, and name the node; the files are in the data dir
    queries = PgScpQueries(postgres_url)
    rows = {r["sop_instance_uid"]: r for r in queries.instances()}
    assert set(rows) == committed
    assert all(r["durable"] >= 1 and r["node"] == "solo" for r in rows.values())
    assert all((scp.config.data_dir / r["path"]).is_file() for r in rows.values())
    tx = scp.wait_delivered("1.2.3.500", 5)
    assert tx is not None and tx.delivered_via.startswith("a new association")
    row = queries.transactions()[0]
    assert (row["received_by"], row["verified_by"], row["delivered_by"]) == ("solo",) * 3
    assert queries.integrity_problems() == []
    assert not (scp.config.data_dir / "index.sqlite").exists()  # nothing went to SQLite


def test_the_http_api_shows_the_cluster_from_the_database(
    tmp_path, modality, instances, postgres_url
):
    """What /api/v1 shows of a node on PostgreSQL: its transactions with the nodes that
    received, verified and delivered them, the durable references, and every node's counts."""
    listen = modality.listen()
    with scp_with_http(
        tmp_path / "scp",
        aet="ARCHIVE",
        remotes=(remote("MODALITY", listen),),
        database=DatabaseConfig(url=postgres_url, node="web-node"),
    ) as (scp, web):
        client = Client(web.port)
        paths = instances(2)
        assert modality.store(scp.port, paths) == [0, 0]
        assert modality.commit(scp.port, refs_of(paths), "1.2.3.507") == 0
        assert scp.wait_delivered("1.2.3.507", REPORT_WAIT) is not None
        (tx,) = client.ok("/api/v1/transactions")["items"]
        assert (tx["transaction_uid"], tx["state"]) == ("1.2.3.507", "delivered")
        assert (tx["received_by"], tx["verified_by"], tx["delivered_by"]) == ("web-node",) * 3
        one = client.ok(f"/api/v1/transactions/{tx['id']}")
        assert [(r["outcome"], r["durable"]) for r in one["references"]] == [
            ("committed", True)
        ] * 2
        status = client.ok("/api/v1/status")
        assert status["nodes"] == [
            {"node": "web-node", "received": 1, "verified": 1, "delivered": 1, "leased": 0}
        ]


def test_the_cli_takes_a_unix_socket_url_and_creates_the_schema(cluster, modality, instances):
    """``stgcmt scp --database postgresql://user@/db?host=DIR&port=N`` on an empty database."""
    assert "?host=/" in cluster.database_url
    (node,) = cluster.start(1)
    with psycopg.connect(cluster.database_url) as conn:
        versions = conn.execute("SELECT version FROM stgcmt_schema").fetchall()
    assert versions == [(version,) for version in range(1, LATEST + 1)]
    paths = instances(2)
    assert modality.store(node.port, paths) == [0, 0]
    assert modality.commit(node.port, refs_of(paths), "1.2.3.501") == 0
    assert modality.wait_report(REPORT_WAIT)
    assert _committed(modality) == {p.stem for p in paths}
    status = cluster.status()
    assert status["database"] == cluster.database_url
    assert status["transactions_by_state"]["delivered"] == 1
    assert [n["node"] for n in status["nodes"]] == ["node-a"]


def test_an_unreachable_database_stops_the_start_naming_the_url_without_its_password(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgresql://stgcmt:s3cret@{LOCALHOST}:{port}/archive"
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "stgcmt",
            "scp",
            "--port",
            str(free_port()),
            "--database",
            url,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1  # not 3 (configuration): a service manager starts it again
    assert f"postgresql://stgcmt:***@{LOCALHOST}:{port}/archive" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert "start the server or fix --database" in done.stderr


# -- three nodes, one archive ----------------------------------------------------------------


def test_store_on_two_nodes_commit_on_a_third(cluster, modality, instances):
    a, b, c = cluster.start(3)
    on_a, on_c = instances(2), instances(2)
    assert modality.store(a.port, on_a) == [0, 0]
    assert modality.store(c.port, on_c) == [0, 0]
    missing = Reference(SECONDARY_CAPTURE, generate_uid())
    assert modality.commit(b.port, [*refs_of(on_a + on_c), missing], "1.2.3.502") == 0
    assert modality.wait_report(REPORT_WAIT)
    time.sleep(1.0)  # a second report from another node would arrive now
    assert len(modality.reports) == 1
    committed, failed = report_content(modality.reports[0][1])
    assert committed == {p.stem for p in on_a + on_c}
    assert failed == {missing.sop_instance_uid: NO_SUCH_OBJECT_INSTANCE}
    instances_by_node = {
        r["sop_instance_uid"]: r["node"] for r in PgScpQueries(cluster.database_url).instances()
    }
    assert instances_by_node == {
        **dict.fromkeys((p.stem for p in on_a), "node-a"),
        **dict.fromkeys((p.stem for p in on_c), "node-c"),
    }
    tx = _transaction(cluster, "1.2.3.502")
    assert (tx["received_by"], tx["verified_by"], tx["delivered_by"]) == ("node-b",) * 3
    status = cluster.status()
    by_node = {n["node"]: n for n in status["nodes"]}
    assert by_node["node-b"]["delivered"] == 1 and "node-a" not in by_node


def test_two_nodes_share_one_port_with_reuse_port(cluster, modality, instances):
    """``--reuse-port``: two nodes listen on one port, the kernel spreads 20 associations
    over both (each stored some, the index says which), the N-ACTION goes to whichever
    answers, and that node commits what both stored: one report, every instance."""
    port = free_port()
    a, b = cluster.start(2, shared_port=port)
    assert a.port == b.port == port and a.alive and b.alive
    paths = instances(20)
    for path in paths:  # one association each
        assert modality.store(port, [path]) == [0]
    stored_by = {
        r["sop_instance_uid"]: r["node"] for r in PgScpQueries(cluster.database_url).instances()
    }
    assert set(stored_by) == {p.stem for p in paths}
    per_node = {node: list(stored_by.values()).count(node) for node in ("node-a", "node-b")}
    assert all(per_node.values()), f"one node took every association: {per_node}"
    assert modality.commit(port, refs_of(paths), "1.2.3.503") == 0
    assert modality.wait_report(REPORT_WAIT)
    time.sleep(1.0)  # a second report from the other node would arrive now
    assert len(modality.reports) == 1
    assert _committed(modality) == {p.stem for p in paths}
    tx = _transaction(cluster, "1.2.3.503")
    assert tx["received_by"] in per_node and tx["delivered_by"] == tx["received_by"]


def test_duplicates_and_class_conflicts_are_seen_across_nodes(cluster, modality, tmp_path):
    """A Transaction UID still active on node A is a duplicate on node C (0131H for every
    reference); an instance UID stored via A as Secondary Capture and via B as CT is a class
    conflict, recorded once and reported 0119H whichever node is asked."""
    a, b, c = cluster.start(3)
    (sc,) = write_instances(tmp_path / "sc", 1)
    ct = make_dataset(CT_IMAGE)
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = sc.stem
    ct.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    assert modality.store(a.port, [sc]) == [0]
    assert modality.store(b.port, [tmp_path / "ct.dcm"]) == [0]  # kept: the first copy stays
    relay = cluster.relay
    assert relay is not None
    relay.holding.set()  # both reports wait at the modality's door: the first stays active
    as_ct = Reference(CT_IMAGE, sc.stem)
    assert modality.commit(a.port, [*refs_of([sc]), as_ct], "1.2.3.506") == 0
    assert modality.commit(c.port, refs_of([sc]), "1.2.3.506") == 0
    assert wait_for(lambda: len(relay.held) >= 2, 20)
    relay.holding.clear()
    for held in relay.held:
        held.close()  # the nodes retry on a new association, through the relay
    assert modality.wait_report(REPORT_WAIT, count=2)
    outcomes = sorted(
        (sorted(report_content(info)[1].items()), sorted(report_content(info)[0]))
        for _, info, _ in modality.reports
    )
    assert outcomes == sorted(
        [
            ([(sc.stem, CLASS_INSTANCE_CONFLICT)], [sc.stem]),  # the original, on node A
            ([(sc.stem, DUPLICATE_TRANSACTION_UID)], []),  # the duplicate, on node C
        ]
    )
    conflicts = PgScpQueries(cluster.database_url).class_conflicts()
    assert [(r["sop_instance_uid"], r["sop_class_uid"], r["node"]) for r in conflicts] == [
        (sc.stem, CT_IMAGE, "node-b")
    ]
    duplicate = [t for t in PgScpQueries(cluster.database_url).transactions() if t["duplicate_of"]]
    assert [t["received_by"] for t in duplicate] == ["node-c"]


def test_a_node_killed_while_it_holds_a_report_lease_is_replaced_and_the_report_arrives_once(
    cluster, modality, instances
):
    """Node B answers the N-ACTION and starts delivering; the modality's side holds the
    connection unanswered; B is killed -9 there. After B's lease (4 s) another node delivers:
    one N-EVENT-REPORT on the wire, recorded as delivered by that node."""
    a, b, c = cluster.start(3)
    paths = instances(3)
    assert modality.store(a.port, paths) == [0, 0, 0]
    relay = cluster.relay
    assert relay is not None
    relay.holding.set()
    assert modality.commit(b.port, refs_of(paths), "1.2.3.503") == 0
    assert wait_for(lambda: relay.held, 20), "node B never tried to deliver"
    delivery_began = time.monotonic()
    assert _transaction(cluster, "1.2.3.503")["lease_node"] == "node-b"
    # the others leave it alone meanwhile, without spinning on the claim (they did: ~0.25 s
    # of CPU each in these 1.5 s, one claim per database round trip)
    cpu_before = {n.name: _cpu_seconds(n) for n in (a, c)}
    time.sleep(1.5)
    assert not modality.reports and len(relay.held) == 1
    assert {n.name: _cpu_seconds(n) - cpu_before[n.name] < 0.1 for n in (a, c)} == {
        "node-a": True,
        "node-c": True,
    }
    assert b.kill() == -9
    relay.holding.clear()
    assert modality.wait_report(REPORT_WAIT)
    taken_over_after = time.monotonic() - delivery_began
    time.sleep(2.0)
    assert len(modality.reports) == 1  # exactly once on the wire
    assert _committed(modality) == {p.stem for p in paths}
    tx = _transaction(cluster, "1.2.3.503")
    assert tx["state"] == "delivered"
    assert tx["received_by"] == "node-b" and tx["delivered_by"] in {"node-a", "node-c"}
    assert taken_over_after >= 3.5  # not before B's lease ran out (4 s from its claim)


def test_a_same_association_report_of_a_dead_node_goes_out_where_the_modality_comes_back(
    tmp_path, postgres_url, modality, instances
):
    """Reports on the requesting association (``--report-assoc same``): node B answers the
    N-ACTION and dies verifying it (a crash point, SIGKILL). The modality asks node C for
    another commitment and keeps that association open: after B's lease, C sends both reports
    on it."""
    cluster = Cluster(
        tmp_path,
        postgres_url,
        [
            "--config",
            str(_lease_config(tmp_path)),
            "--aet",
            "ARCHIVE",
            "--report-assoc",
            "same",
            "--accept-unknown",
            "--retry-start",
            "0.2",
            "--retry-cap",
            "1",
        ],
        {},
    )
    try:
        (a,) = cluster.start(1)
        (b,) = cluster.start(1, STGCMT_CRASH_POINTS="scp.verify.mid=1")
        (c,) = cluster.start(1)
        first, second = instances(2), instances(2)
        assert modality.store(a.port, first + second) == [0] * 4
        assert modality.commit(b.port, refs_of(first), "1.2.3.508") == 0
        assert b.proc.wait(timeout=30) == -9  # died verifying it, after answering
        assert modality.commit(c.port, refs_of(second), "1.2.3.509", wait_same=30, reports=2) == 0
        assert len(modality.reports) == 2
        by_uid = {
            info.TransactionUID: (how, report_content(info)[0]) for _, info, how in modality.reports
        }
        assert by_uid == {
            "1.2.3.508": ("same", {p.stem for p in first}),
            "1.2.3.509": ("same", {p.stem for p in second}),
        }
        tx = _transaction(cluster, "1.2.3.508")
        assert (tx["received_by"], tx["delivered_by"]) == ("node-b", "node-c")
    finally:
        cluster.stop()


def test_a_restart_of_the_database_under_running_nodes_loses_nothing_acknowledged(
    cluster, modality, instances, postgres_cluster
):
    """C-STOREs go on through all three nodes while PostgreSQL restarts (immediate: every
    connection killed mid-transaction). Every C-STORE answered Success is then committed by a
    report, and an N-ACTION answered before the restart is delivered after it."""
    nodes = cluster.start(3)
    before = instances(2)
    assert modality.store(nodes[0].port, before) == [0, 0]
    assert modality.commit(nodes[1].port, refs_of(before), "1.2.3.504") == 0

    statuses: dict[Path, int] = {}
    batches = [instances(1) for _ in range(24)]
    stop = threading.Event()

    def keep_storing():
        for number, batch in enumerate(batches):
            if stop.is_set():
                return
            try:
                statuses[batch[0]] = modality.store(nodes[number % 3].port, batch)[0]
            except (AssertionError, RuntimeError, OSError):
                statuses[batch[0]] = -1  # no association: not acknowledged either
            time.sleep(0.05)

    storing = threading.Thread(target=keep_storing)
    storing.start()
    time.sleep(0.3)
    postgres_cluster.restart()
    storing.join(timeout=120)
    stop.set()
    assert all(n.alive for n in nodes)
    acknowledged = [p for p, status in statuses.items() if status == 0]
    assert acknowledged, statuses
    assert modality.wait_report(REPORT_WAIT)
    assert _committed(modality, 0) == {p.stem for p in before}
    assert modality.commit(nodes[2].port, refs_of(acknowledged), "1.2.3.505") == 0
    assert modality.wait_report(REPORT_WAIT, count=2)
    committed, failed = report_content(modality.reports[1][1])
    assert failed == {}
    assert committed == {p.stem for p in acknowledged}
    assert PgScpQueries(cluster.database_url).integrity_problems() == []
