"""``python -m bench --quick``: the benchmark runs end to end against real servers (our SCP,
DCMTK's storescp, pynetdicom) and prints every row of issue 12's table with a target and a
verdict. The figures themselves are not checked (a shared 2-core machine makes them noise
here); that each row exists and was measured is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.common import PYTHON

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    "stgcmt, ingest small, C-STORE only, vs storescp",
    "stgcmt, ingest large, C-STORE only, vs storescp",
    "stgcmt, ingest small + commitment of all, vs storescp",
    "stgcmt, ingest large + commitment of all, vs storescp",
    "stgcmt, server CPU per small instance, x storescp's",
    "commitment report, every reference stored, 10,000 refs",
    "commitment report, every reference stored, 100,000 refs",
    "SCP peak RSS during those commitments",
    "stgcmt send small: C-STORE phase vs storescu",
    "stgcmt send small: whole command vs storescu",
    "stgcmt, 2 concurrent associations vs storescp",
    "Nagle-on client, storescu -> stgcmt, per instance",
    "Nagle-on client, pynetdicom -> stgcmt, per instance",
    "memory for one 32 MiB C-STORE (peak RSS growth)",
    "stgcmt --version wall time",
]
QUICK_UNMEASURED = {
    "commitment report, every reference stored, 10,000 refs",
    "commitment report, every reference stored, 100,000 refs",
}
"""--quick stores at most 1,000 instances per commitment."""


def test_quick_bench_prints_every_row_of_the_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "bench", "--quick", "--no-orthanc", "--no-uvloop", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("Targets (issue 12") :]
    for row in ROWS:
        line = next((ln for ln in table.splitlines() if ln.startswith(row)), None)
        assert line is not None, f"row {row!r} missing from:\n{table}"
        verdict = "not measured" if row in QUICK_UNMEASURED else ("met", "not met")
        assert line.rstrip().endswith(verdict), line
    document = json.loads((tmp_path / "latest.json").read_text())
    assert [t["name"] for t in document["targets"]] == ROWS
    assert document["errors"] == []
    assert (tmp_path / "latest.png").stat().st_size > 0
