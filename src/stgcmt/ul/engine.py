"""The engine's event loop: one asyncio loop in a daemon thread, shared by every server and
association of the process. The services are synchronous and threaded: blocking calls submit
coroutines to the loop and wait (:func:`run`); handlers run in each association's own thread
(see :mod:`.exchange`), never on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop_lock = threading.Lock()
_loops: list[asyncio.AbstractEventLoop] = []


def engine_loop() -> asyncio.AbstractEventLoop:
    """The process's engine loop, started on first use in a daemon thread."""
    with _loop_lock:
        if not _loops:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="stgcmt-engine", daemon=True)
            thread.start()
            _loops.append(loop)
        return _loops[0]


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
