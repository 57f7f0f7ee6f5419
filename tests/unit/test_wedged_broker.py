"""A broker that accepts TCP but never completes the AMQP handshake (wedged): every connection
attempt of a process gives up after `LEADWIRE_AMQP_CONNECT_TIMEOUT` and closes its socket, instead
of waiting forever (a process that never finished starting, or never reconnected). A silent TCP
server on 127.0.0.1 stands in for the wedged broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from shared.rpc import RequestReply
from shared.service import Runtime
from shared.settings import Settings

# A guard against the hang this file is about, not a speed assertion: far above the timeouts set.
GUARD = 60.0


class SilentServer:
    """Reads the AMQP protocol header and never answers; counts connections and their closes."""

    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass
        self.closed += 1
        writer.close()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


@asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    silent = SilentServer()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    try:
        yield silent
    finally:
        server.close()


async def gives_up(attempt: Callable[[], Coroutine[Any, Any, object]]) -> BaseException | None:
    """Run `attempt`; its exception once it gives up (the test fails if it is still waiting)."""
    task: asyncio.Task[object] = asyncio.create_task(attempt())
    done, _ = await asyncio.wait({task}, timeout=GUARD)
    if not done:
        task.cancel()
        pytest.fail("the connection attempt was still waiting on the wedged broker")
    return task.exception()


async def all_closed(silent: SilentServer) -> None:
    for _ in range(int(GUARD / 0.05)):
        if silent.accepted and silent.closed == silent.accepted:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{silent.accepted - silent.closed} connection(s) left open on the wedged broker")


async def test_a_service_connecting_to_a_wedged_broker_gives_up_and_closes_its_socket() -> None:
    async with silent_server() as silent:
        runtime = Runtime("router", Settings(AMQP_URL=silent.url, LEADWIRE_AMQP_CONNECT_TIMEOUT=0.5))
        error = await gives_up(runtime.broker.connect)
        assert isinstance(error, TimeoutError | ConnectionError), repr(error)
        await all_closed(silent)
        await runtime.broker.stop()


async def test_the_request_reply_client_gives_up_on_a_wedged_broker_and_closes_its_socket() -> None:
    async with silent_server() as silent:
        rpc = RequestReply(silent.url, name="intake", connect_timeout=0.5)
        error = await gives_up(rpc.start)
        assert isinstance(error, TimeoutError | ConnectionError), repr(error)
        await all_closed(silent)
        await rpc.close()
