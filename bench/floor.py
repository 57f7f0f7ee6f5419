"""The floor: the least I/O a routed lead needs, on the same machine, with plain aio-pika + asyncpg.

A lead is published persistent with confirms to a quorum queue; one worker process consumes it,
inserts it in one PostgreSQL transaction, republishes it persistent with confirms to a second
quorum queue, and acks; the benchmark consumes that and acks. Nothing else: no validation, no
duplicate check, no outbox, no HTTP post. The worker uses the same prefetch and pool size as a
Leadwire service so the ratio compares designs, not tuning.

  python -m bench.floor --amqp-url ... --database-url ... --namespace ns [--prefetch 32]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import aio_pika
import asyncpg

TABLE = """CREATE TABLE IF NOT EXISTS floor_leads (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now())"""


def queue_names(namespace: str) -> tuple[str, str]:
    return f"{namespace}.floor.in", f"{namespace}.floor.out"


async def declare(channel: aio_pika.abc.AbstractChannel, namespace: str) -> None:
    for name in queue_names(namespace):
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


async def delete(amqp_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in queue_names(namespace):
            await channel.queue_delete(name)
    finally:
        await connection.close()


async def no_reset(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query, as Leadwire's pool does (shared/db.py)."""


async def until_signalled() -> None:
    """Return on SIGTERM or SIGINT: the benchmark stops its workers with SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a worker on the event loop the services run on (faststream run picks uvloop)."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main)


async def worker(amqp_url: str, database_url: str, namespace: str, prefetch: int, pool_size: int) -> None:
    inbound, outbound = queue_names(namespace)
    # Released without asyncpg's reset query, as Leadwire's pool is (shared/db.py): the least I/O.
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=pool_size, reset=no_reset)
    async with pool.acquire() as conn:
        await conn.execute(TABLE)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=prefetch)
    await declare(channel, namespace)
    queue = await channel.get_queue(inbound)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO floor_leads (idempotency_key, body) VALUES ($1, $2::jsonb) ON CONFLICT DO NOTHING",
                message.message_id,
                message.body.decode(),
            )
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                message_id=message.message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=outbound,
            timeout=30,
        )
        await message.ack()

    await queue.consume(on_message)
    print("floor worker ready", flush=True)
    await until_signalled()
    await connection.close()
    await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--pool-size", type=int, default=20)
    a = parser.parse_args()
    run(worker(a.amqp_url, a.database_url, a.namespace, a.prefetch, a.pool_size))
