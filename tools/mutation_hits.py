"""mutmut's test-to-function map, extended to the subprocesses the tests start.

mutmut runs a mutant only against the tests that *called* the mutated function during its
"stats" run, and it records those calls in the pytest process alone. Our end-to-end tests
start real ``stgcmt`` processes (``send``, ``agent``, ``scp``), so a function that only runs
there would be marked "no tests" and never tested, although those tests kill its mutants.

``tools/mutation.sh`` puts this module on PYTHONPATH with a ``sitecustomize`` that calls
:func:`install` in every Python process of the run, and loads it as a pytest plugin:

- in the pytest process, during the stats run, the plugin creates a directory and names it in
  the environment (``STGCMT_MUTATION_HITS``), which every process the tests start inherits;
- in such a subprocess, :func:`install` makes mutmut's trampoline append each function it
  enters, once, to a file of that directory (a line at a time: a SIGKILL loses nothing);
- after each test, the plugin hands the names written since to mutmut as that test's calls.

Outside a stats run (the mutant runs themselves) both do nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

HITS_DIR = "STGCMT_MUTATION_HITS"

_read_up_to: dict[Path, int] = {}


def _collecting_stats() -> bool:
    """True while mutmut's stats run is on (it names the mutant "stats")."""
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def install() -> None:
    """In a process started by a test during the stats run: record trampoline hits to a file."""
    hits_dir = os.environ.get(HITS_DIR)
    if not hits_dir or not _collecting_stats():
        return
    from mutmut.mutation import trampoline

    path = Path(hits_dir) / f"{os.getpid()}.hits"
    seen: set[str] = set()

    def record(name: str, caller: str | None = None) -> None:
        if name not in seen:
            seen.add(name)
            with path.open("a", encoding="utf-8") as hits:
                hits.write(name + "\n")

    trampoline.record_trampoline_hit = record


def pytest_configure(config: pytest.Config) -> None:
    """In the pytest process of the stats run: where the subprocesses write their hits."""
    if _collecting_stats():
        os.environ[HITS_DIR] = tempfile.mkdtemp(prefix="stgcmt-mutation-hits-")


def _new_hits(hits_dir: Path) -> set[str]:
    """The function names subprocesses wrote since the last call."""
    names: set[str] = set()
    for path in sorted(hits_dir.glob("*.hits")):
        with path.open("rb") as hits:
            hits.seek(_read_up_to.get(path, 0))
            data = hits.read()
        # a line still being written waits for the next test
        complete = data[: data.rfind(b"\n") + 1]
        _read_up_to[path] = _read_up_to.get(path, 0) + len(complete)
        names.update(complete.decode("utf-8").split())
    return names


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> None:
    """Before mutmut files this test's calls: add the ones made in its subprocesses."""
    hits_dir = os.environ.get(HITS_DIR)
    if hits_dir and _collecting_stats():
        from mutmut.state import state

        state()._stats.update(_new_hits(Path(hits_dir)))
