"""What the CLI imports before it does anything: ``stgcmt --version`` loads no command, no
pydicom and no pynetdicom (start-up is the whole cost of such a run), a command imports
its own module, not every other command's, and ``stgcmt send --help`` and ``stgcmt status``
load neither pydicom nor the engine (they parse flags or read a database). Checked in a fresh
interpreter: ``sys.modules`` after ``stgcmt.cli.main`` has run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from stgcmt.storage.scp_journal import CommitmentJournal
from stgcmt.storage.scu_journal import ScuJournal
from stgcmt.storage.sqlite_index import SqliteInstanceIndex

from support.common import PYTHON

HEAVY = ("pydicom", "pynetdicom", "numpy", "stgcmt.ul", "stgcmt.scp", "stgcmt.scu")
ENGINE = ("pydicom", "pynetdicom", "numpy", "stgcmt.ul", "stgcmt.scp.service")
"""What a command that sends nothing and serves nothing has no use for."""
PROBE = """
import json, sys
from stgcmt.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def imported(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules ``stgcmt ARGS`` had imported when it was done, and its result."""
    done = subprocess.run(
        [PYTHON, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, check=False
    )
    return set(json.loads(done.stderr.splitlines()[-1])), done


def _heavy(names: set[str], heavy: tuple[str, ...] = HEAVY) -> set[str]:
    return {n for n in names if any(n == h or n.startswith(h + ".") for h in heavy)}


def test_version_imports_no_command_and_no_dicom_library() -> None:
    names, done = imported("--version")
    assert done.stdout.startswith("stgcmt ")
    assert _heavy(names) == set()
    assert not {n for n in names if n.startswith("stgcmt.cli.")}


def test_a_command_imports_only_its_own_module() -> None:
    names, done = imported("echo", "--help")
    assert "usage: stgcmt echo" in done.stdout
    commands = {n for n in names if n.startswith("stgcmt.cli.") and n.endswith("_cmd")}
    assert commands == {"stgcmt.cli.echo_cmd"}
    assert "pynetdicom" not in names


def test_help_still_lists_every_command() -> None:
    _, done = imported("--help")
    for command in ("scp", "send", "agent", "status", "echo"):
        assert f"\n    {command} " in done.stdout or f"  {command}  " in done.stdout


def test_send_help_imports_neither_pydicom_nor_the_engine() -> None:
    names, done = imported("send", "--help")
    assert "usage: stgcmt send" in done.stdout
    assert _heavy(names, ENGINE) == set()


def test_status_of_a_data_dir_imports_neither_pydicom_nor_the_engine(tmp_path: Path) -> None:
    CommitmentJournal(tmp_path / "commitment.sqlite").close()
    SqliteInstanceIndex(tmp_path / "index.sqlite").close()
    names, done = imported("status", "--data-dir", str(tmp_path), "--json")
    assert json.loads(done.stdout)["transactions"] == []
    assert _heavy(names, ENGINE) == set()


def test_status_of_a_journal_imports_neither_pydicom_nor_the_engine(tmp_path: Path) -> None:
    ScuJournal(tmp_path / "scu.sqlite").close()
    names, done = imported("status", "--journal", str(tmp_path / "scu.sqlite"), "--json")
    assert json.loads(done.stdout)["transactions"] == []
    assert _heavy(names, ENGINE) == set()
