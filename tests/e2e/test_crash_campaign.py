"""The bounded crash campaign: at least 30 real SIGKILLs of the SCP, the agent or send (each
counted once, when its process is reaped with SIGKILL as the cause), timer kills only while the
target has work in flight, every crash point of ``stgcmt.faults`` fired at least once, then
every invariant of tools/crash_campaign.py, including "every acknowledged N-ACTION reached the
modality on the wire, repeats only across an SCP crash between answer and record"."""

from __future__ import annotations

import pytest

from stgcmt import faults

from crash_campaign import crash_points_in_code, run_campaign

KILLS = 30


def test_every_crash_point_is_called_in_the_code():
    assert sorted(crash_points_in_code()) == sorted(faults.POINTS)


@pytest.mark.timeout(420)  # the campaign's own bound, plus its checks
def test_thirty_kills_lose_nothing(tmp_path):
    summary = run_campaign(KILLS, seed=20261122, workdir=tmp_path, max_seconds=300)
    print("\n".join(summary.lines()))
    assert summary.violations == []
    assert summary.total_kills >= KILLS
    assert {p: summary.fired[p] > 0 for p in faults.POINTS} == dict.fromkeys(faults.POINTS, True)
    assert summary.timer_kills == summary.timer_in_flight  # no timer kill hit an idle process
    assert summary.wire["acknowledged"] > 0 and summary.wire["answered"] > 0
    assert summary.checks > KILLS  # the invariants were really evaluated
