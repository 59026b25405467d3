"""The engine's event loop choice (``STGCMT_LOOP``): uvloop when asked for and installed,
stdlib asyncio otherwise, and an unknown choice never stops the engine."""

from __future__ import annotations

import asyncio
import logging

import pytest
import uvloop

from stgcmt.ul.engine import new_loop


def _echo_round_trip(loop: asyncio.AbstractEventLoop) -> bytes:
    """A real TCP exchange on 127.0.0.1 through ``loop``: proves it is usable, not only made."""

    async def exchange() -> bytes:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(4))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        answer = await reader.readexactly(4)
        writer.close()
        server.close()
        await server.wait_closed()
        return answer

    try:
        return loop.run_until_complete(asyncio.wait_for(exchange(), 10))
    finally:
        loop.close()


def test_uvloop_when_asked_for() -> None:
    loop = new_loop("uvloop")
    assert isinstance(loop, uvloop.Loop)
    assert _echo_round_trip(loop) == b"ping"


def test_asyncio_by_name() -> None:
    loop = new_loop("asyncio")
    assert not isinstance(loop, uvloop.Loop)
    assert _echo_round_trip(loop) == b"ping"


def test_an_unknown_loop_falls_back_to_asyncio_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="stgcmt.engine")
    loop = new_loop("tokio")
    assert not isinstance(loop, uvloop.Loop)
    assert _echo_round_trip(loop) == b"ping"
    assert "STGCMT_LOOP='tokio' is not asyncio or uvloop" in caplog.text
