"""shared/rpc.py on a real broker: many requests in flight on one client, each gets its own reply."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
import pytest

from shared.rpc import DEADLINE_HEADER, RequestFailed, RequestReply

pytestmark = pytest.mark.integration

Responder = Callable[[list[aio_pika.abc.AbstractIncomingMessage]], Awaitable[None]]


@asynccontextmanager
async def responder_queue(
    amqp_url: str, namespace: str
) -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, str, asyncio.Queue]]:
    """A plain queue bound to `<ns>.rpc-test` that hands every request to the test."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{namespace}.rpc-test", aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await channel.declare_queue(f"{namespace}.rpc-test.q", auto_delete=True)
    await queue.bind(exchange, "echo.#")
    received: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    await queue.consume(received.put, no_ack=True)
    try:
        yield channel, exchange.name, received
    finally:
        await connection.close()


async def answer(
    channel: aio_pika.abc.AbstractChannel, request: aio_pika.abc.AbstractIncomingMessage, body: object
) -> None:
    assert request.reply_to is not None
    await channel.default_exchange.publish(
        aio_pika.Message(json.dumps(body).encode(), correlation_id=request.correlation_id),
        routing_key=request.reply_to,
    )


@pytest.fixture
async def rpc(amqp_url, namespace):
    client = RequestReply(amqp_url, name="test", namespace=namespace)
    await client.start()
    yield client
    await client.close()


async def test_many_requests_are_in_flight_together_and_each_gets_its_own_reply(amqp_url, namespace, rpc):
    n = 40
    async with responder_queue(amqp_url, namespace) as (channel, exchange, received):
        calls = [asyncio.create_task(rpc.request(exchange, "echo.x", {"i": i}, timeout=10)) for i in range(n)]
        # The responder holds every request until all of them have arrived: a client that sent
        # one request at a time would never get here, and every call would time out.
        held = [await asyncio.wait_for(received.get(), 10) for _ in range(n)]
        assert rpc.in_flight == n
        for request in reversed(held):  # answered in the reverse order
            await answer(channel, request, {"echo": json.loads(request.body)["i"]})
        replies = await asyncio.gather(*calls)
    assert [r.json() for r in replies] == [{"echo": i} for i in range(n)]
    assert rpc.in_flight == 0


async def test_a_request_carries_its_deadline_and_ids(amqp_url, namespace, rpc):
    async with responder_queue(amqp_url, namespace) as (channel, exchange, received):
        call = asyncio.create_task(rpc.request(exchange, "echo.x", {"a": 1}, timeout=5, message_id="m-1"))
        request = await asyncio.wait_for(received.get(), 5)
        await answer(channel, request, {"ok": True})
        await call
    deadline = int(request.headers[DEADLINE_HEADER])
    assert time.time() * 1000 < deadline <= (time.time() + 5) * 1000
    assert request.message_id == "m-1"
    assert request.reply_to == rpc.reply_queue
    assert request.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_a_request_nobody_can_route_fails_at_once(amqp_url, namespace, rpc):
    async with responder_queue(amqp_url, namespace) as (_channel, exchange, _received):
        with pytest.raises(RequestFailed):
            await rpc.request(exchange, "nobody.listens", {"a": 1}, timeout=5)
    assert rpc.in_flight == 0


async def test_a_late_reply_is_never_taken_for_the_next_request(amqp_url, namespace, rpc):
    async with responder_queue(amqp_url, namespace) as (channel, exchange, received):
        with pytest.raises(TimeoutError):
            await rpc.request(exchange, "echo.x", {"n": 1}, timeout=0.3)
        late = await asyncio.wait_for(received.get(), 5)
        second = asyncio.create_task(rpc.request(exchange, "echo.x", {"n": 2}, timeout=5))
        current = await asyncio.wait_for(received.get(), 5)
        await answer(channel, late, {"answer": "to the first"})
        await answer(channel, current, {"answer": "to the second"})
        assert (await second).json() == {"answer": "to the second"}
