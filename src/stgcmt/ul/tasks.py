"""Tasks the engine starts and does not await: kept referenced until done (the event loop
holds only weak references, so a dropped task may be garbage-collected mid-flight)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_running: set[asyncio.Task[Any]] = set()


def spawn(coroutine: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
    """Start ``coroutine`` on the running loop, holding the task until it is done."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def running() -> int:
    """Tasks started with :func:`spawn` not yet done (for tests)."""
    return len(_running)
