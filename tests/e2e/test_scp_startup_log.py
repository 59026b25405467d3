"""What a starting SCP says about the transactions it resumes: one INFO line with the counts
by state and how many this node received (in a cluster the journal holds every node's), and
a line per transaction only at DEBUG; on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging

import pytest

from stgcmt.dicom.commitment import Reference
from stgcmt.storage.scp_journal import REPORT_PENDING

from support.common import SECONDARY_CAPTURE


def _requests(journal, count: int, prefix: str) -> list[int]:
    return [
        journal.record_request(
            f"{prefix}.{n}", "MODALITY", None, "new", [Reference(SECONDARY_CAPTURE, "1.2.9")]
        ).id
        for n in range(count)
    ]


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_a_starting_node_sums_up_the_unfinished_transactions(
    scp_backend, scp_factory, caplog, level
):
    here = _requests(scp_backend.journal("node-a"), 3, "1.2.3.700")
    elsewhere = scp_backend.journal("node-c")
    _requests(elsewhere, 2, "1.2.3.800")
    scp_backend.journal("node-a").finish_verification(here[0], first_attempt_at=0.0)
    scp_backend.journal("node-a").mark_delivered(here[1], "new association")
    caplog.set_level(level, logger="stgcmt.scp")
    scp_factory(data_dir=scp_backend.data_dir, database=scp_backend.database("node-a"))
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "resume" in r.getMessage()]
    mine = 2 if scp_backend.url else 4  # a SQLite journal is this node's alone
    summary = (
        logging.INFO,
        f"4 unfinished transactions resume (3 received, 1 report pending;"
        f" {mine} of them received by this node)",
    )
    assert said[0] == summary
    per_transaction = said[1:]
    if level == logging.INFO:
        assert per_transaction == []
    else:
        assert len(per_transaction) == 4
        assert {lvl for lvl, _ in per_transaction} == {logging.DEBUG}
        assert any(f"#{here[0]}" in m and REPORT_PENDING in m for _, m in per_transaction)
