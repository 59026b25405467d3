"""The engine's event loop: one asyncio loop in a daemon thread, shared by every server and
association of the process. The services are synchronous and threaded: blocking calls submit
coroutines to the loop and wait (:func:`run`); handlers run in each association's own thread
(see :mod:`.exchange`), never on the loop.

The loop is stdlib asyncio's unless ``STGCMT_LOOP=uvloop`` names uvloop (``pip install
stgcmt[uvloop]``); see the README's "Benchmarks" for what it changes."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("stgcmt.engine")

LOOP_ENV = "STGCMT_LOOP"
"""Environment variable choosing the engine's event loop: ``asyncio`` (default) or ``uvloop``."""

_loop_lock = threading.Lock()
_loops: list[asyncio.AbstractEventLoop] = []


def engine_loop() -> asyncio.AbstractEventLoop:
    """The process's engine loop, started on first use in a daemon thread."""
    with _loop_lock:
        if not _loops:
            loop = new_loop(os.environ.get(LOOP_ENV, "asyncio"))
            thread = threading.Thread(target=loop.run_forever, name="stgcmt-engine", daemon=True)
            thread.start()
            _loops.append(loop)
        return _loops[0]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind``; stdlib asyncio's, saying why, when uvloop was asked for
    but is not installed or ``kind`` is unknown: a loop choice must never stop the engine."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning(
                "%s=uvloop but uvloop is not installed (pip install stgcmt[uvloop]):"
                " using asyncio's loop",
                LOOP_ENV,
            )
        else:
            return uvloop.new_event_loop()
    elif kind != "asyncio":
        log.warning("%s=%r is not asyncio or uvloop: using asyncio's loop", LOOP_ENV, kind)
    return asyncio.new_event_loop()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the engine loop and wait for its result (from any other thread)."""
    loop = engine_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise RuntimeError("a blocking engine call was made on the engine loop")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()
