"""The PostgreSQL schema as numbered migrations, applied in order at start-up and recorded in
``stgcmt_schema`` (version, what it did, when). Nodes starting together serialise on an
advisory lock, so exactly one of them applies each step; a database whose version is newer than
this program knows is refused (an older node must not write a schema it does not understand).

The tables mirror the SQLite ones (``sqlite_index``, ``scp_journal``) column for column, plus
what a cluster needs: which node stored an instance, received, verified and delivered a
transaction, and the lease (``lease_node``, ``lease_until``) a node holds while it works on
one. ``durable`` is 1 once synced, ``read_back`` 1 once its bytes were also read back matching
its SHA-256, ``unsafe`` 1 once a sync failed before it was durable, as in SQLite. Times are
epoch seconds (``double precision``) as on the SQLite side; leases compare the nodes' clocks,
which must be synchronised (NTP).
"""

from __future__ import annotations

from typing import Any

ADVISORY_LOCK = 0x5354_4743_4D54  # "STGCMT": one key for schema changes
"""``pg_advisory_xact_lock`` key held while the schema is checked and migrated."""

_V1 = """
CREATE TABLE instances (
    sop_instance_uid text PRIMARY KEY,
    sop_class_uid text NOT NULL,
    study_instance_uid text,
    series_instance_uid text,
    patient_id text,
    transfer_syntax text NOT NULL,
    path text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    source_aet text,
    received_at double precision NOT NULL,
    durable smallint NOT NULL DEFAULT 0,
    node text,
    read_back smallint NOT NULL DEFAULT 0
);
CREATE INDEX instances_not_durable ON instances (node) WHERE durable = 0;
CREATE TABLE class_conflicts (
    sop_instance_uid text NOT NULL,
    sop_class_uid text NOT NULL,
    source_aet text,
    received_at double precision NOT NULL,
    node text,
    PRIMARY KEY (sop_instance_uid, sop_class_uid)
);
CREATE TABLE transactions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_uid text NOT NULL,
    calling_aet text NOT NULL,
    peer_host text,
    report_assoc text NOT NULL,
    duplicate_of bigint REFERENCES transactions (id),
    state text NOT NULL,
    received_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    n_refs integer NOT NULL,
    n_committed integer,
    n_failed integer,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at double precision,
    last_error text,
    delivered_at double precision,
    delivered_via text,
    received_by text,
    verified_by text,
    delivered_by text,
    lease_node text,
    lease_until double precision
);
CREATE INDEX transactions_active ON transactions (id)
    WHERE state IN ('received', 'verifying', 'report_pending');
CREATE INDEX transactions_uid ON transactions (transaction_uid);
CREATE TABLE refs (
    tx_id bigint NOT NULL REFERENCES transactions (id),
    seq integer NOT NULL,
    sop_class_uid text NOT NULL,
    sop_instance_uid text NOT NULL,
    failure_reason integer,
    PRIMARY KEY (tx_id, seq)
)
"""

_V2 = """
CREATE TABLE delivery_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id bigint NOT NULL REFERENCES transactions (id),
    at double precision NOT NULL,
    node text,
    via text,
    outcome text NOT NULL,
    error text,
    next_attempt_at double precision
);
CREATE INDEX delivery_attempts_tx ON delivery_attempts (tx_id, id)
"""

_V3 = """
ALTER TABLE instances ADD COLUMN unsafe smallint NOT NULL DEFAULT 0
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "instances, class conflicts, transactions with node and lease, references", _V1),
    (2, "delivery attempts: when, which node, same/new association, outcome, error", _V2),
    (3, "instances.unsafe: a copy a failed sync may have lost, never committed", _V3),
)
"""(version, description, SQL): append, never edit one that has shipped."""

LATEST = MIGRATIONS[-1][0]


def migrate(conn: Any) -> int:
    """Bring the schema to :data:`LATEST` in one transaction; returns the version found."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS stgcmt_schema (version integer PRIMARY KEY,"
            " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        found = int(
            conn.execute("SELECT coalesce(max(version), 0) FROM stgcmt_schema").fetchone()[0]
        )
        if found > LATEST:
            raise SchemaTooNew(found)
        for version, description, sql in MIGRATIONS:
            if version > found:
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO stgcmt_schema (version, description) VALUES (%s, %s)",
                    (version, description),
                )
    return found


class SchemaTooNew(Exception):
    """The database was migrated by a newer stgcmt."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"its schema is version {version}, this stgcmt knows up to {LATEST}: upgrade stgcmt"
            " on this node"
        )
