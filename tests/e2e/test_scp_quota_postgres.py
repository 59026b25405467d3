"""The store quota (``--max-store-bytes``) of an archive on PostgreSQL is the cluster's: two
``stgcmt scp`` nodes sharing one database and one data dir cannot each fill it."""

from __future__ import annotations

import time

import psycopg
import pytest

from stgcmt.storage.instances import QUOTA_REFRESH

from support.cluster import Cluster

QUOTA = 1_000_000
PIXELS = 100_000
"""Each instance is a little over 100 kB: 6 of them are more than half the quota."""
OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def cluster(tmp_path, postgres_url):
    made = Cluster(
        tmp_path,
        postgres_url,
        ["--aet", "ARCHIVE", "--accept-unknown", "--max-store-bytes", str(QUOTA)],
        {},
    )
    yield made
    made.stop()


def _stored_bytes(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT coalesce(sum(size), 0) FROM instances").fetchone()[0])


def test_the_second_node_refuses_once_the_cluster_total_passes_the_quota(
    cluster, modality, instances
):
    node_a, node_b = cluster.start(2)
    assert modality.store(node_a.port, instances(6, pixel_bytes=PIXELS)) == [0] * 6
    on_a = _stored_bytes(cluster.database_url)
    assert QUOTA / 2 < on_a < QUOTA
    time.sleep(QUOTA_REFRESH + 0.5)  # node b reads the archive's total again
    statuses = modality.store(node_b.port, instances(6, pixel_bytes=PIXELS))
    fits = (QUOTA - on_a) // (on_a // 6)
    assert statuses == [0] * fits + [OUT_OF_RESOURCES] * (6 - fits)
    assert _stored_bytes(cluster.database_url) <= QUOTA
