"""The crash campaign (tools/crash_campaign.py) with the SCP on PostgreSQL: at least ten real
SIGKILLs of the SCP, the agent or send, every crash point reachable on this backend fired, then
every invariant (nothing committed is lost or altered, every acknowledged N-ACTION reported on
the wire, repeats only across an SCP crash between answer and record, the journal's invariants
in the database)."""

from __future__ import annotations

from stgcmt import faults

from crash_campaign import crash_points_in_code, run_campaign, sqlite_only

KILLS = 10


def test_ten_kills_on_postgresql_lose_nothing(tmp_path, postgres_url):
    summary = run_campaign(
        KILLS, seed=20261201, workdir=tmp_path, max_seconds=150, database_url=postgres_url
    )
    print("\n".join(summary.lines()))
    assert summary.violations == []
    assert summary.total_kills >= KILLS
    reachable = [p for p, where in crash_points_in_code().items() if not sqlite_only(where)]
    assert reachable and set(reachable) <= set(faults.POINTS)
    assert {p: summary.fired[p] > 0 for p in reachable} == dict.fromkeys(reachable, True)
    # reports reached the modality and were answered (how many N-ACTION answers survive to the
    # wire depends on where the kills land: the SQLite campaign's 30 kills assert > 0)
    assert summary.wire["received"] > 0 and summary.wire["answered"] > 0
    assert summary.checks > KILLS
    assert not (tmp_path / "archive" / "commitment.sqlite").exists()  # it ran on PostgreSQL
