"""The bounded crash campaign: 30 kill points (SIGKILL of the SCP, the agent or send, at random
moments and at armed crash points), then every invariant of tools/crash_campaign.py."""

from __future__ import annotations

from crash_campaign import run_campaign

KILLS = 30


def test_thirty_kill_points_lose_nothing(tmp_path):
    summary = run_campaign(KILLS, seed=20261122, workdir=tmp_path, max_seconds=600)
    print(summary.line(), dict(summary.kills))
    assert sum(summary.kills.values()) >= KILLS
    assert summary.checks > KILLS  # the invariants were really evaluated
    assert summary.violations == []
