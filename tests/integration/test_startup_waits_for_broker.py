"""A service process started while RabbitMQ refuses connections (a broker restart under way)
waits for it and starts once it answers, instead of exiting; past `LEADWIRE_AMQP_STARTUP_WAIT` it
gives up. The fault run found the exit: a process SIGKILLed and restarted during the broker's
restart exited on its own. A port with nothing listening stands in for the broker being down; a
TCP forwarder to the real broker, opened on that port later, for the broker coming back."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest

from shared.service import Runtime
from shared.settings import Settings

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _forward(port: int, target_host: str, target_port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_a_service_started_while_the_broker_is_down_waits_and_starts_when_it_answers(settings: Settings):
    broker = urlsplit(settings.amqp_url)
    port = _free_port()
    down = settings.model_copy(update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{port}/"})
    runtime = Runtime("router", down)
    starting = asyncio.create_task(runtime.start())
    # Refused for a while: still trying, not exited.
    await asyncio.sleep(1.5)
    assert not starting.done(), starting.exception() if starting.done() else None
    server = await _forward(port, broker.hostname or "127.0.0.1", broker.port or 5672)
    try:
        await asyncio.wait_for(starting, 60)  # a guard against a hang, not a speed goal
        # Started for real: connected, and the topology it declares is there.
        queue = await runtime.broker.declare_queue(runtime.topology.queue("router.leads"))
        assert queue.name == runtime.topology.queue_name("router.leads")
    finally:
        await runtime.broker.stop()
        await runtime.close()
        server.close()


async def test_a_service_gives_up_after_the_startup_wait(settings: Settings):
    port = _free_port()
    down = settings.model_copy(update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{port}/", "amqp_startup_wait": 1.0})
    runtime = Runtime("router", down)
    with pytest.raises((ConnectionError, OSError)):
        await asyncio.wait_for(runtime.start(), 60)
    await runtime.broker.stop()
    await runtime.close()
