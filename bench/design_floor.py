"""The design floor: the least I/O Leadwire's *design* needs for the benchmark's typical lead,
with plain aio-pika + asyncpg and no logic at all.

The floor (bench/floor.py) is the least any routed lead needs: two hops and one transaction. A
lead of the benchmark catalog is sold twice, in two groups served one after the other, through a
router and a delivery service that talk over the broker. Stripped of everything but that shape,
it is six hops, five transactions and two HTTP posts:

  bench --lead--> router: insert the lead (1 tx), publish a delivery request
          delivery: POST to the buyer, insert the attempt (1 tx), publish the result
          router: count the sale (1 tx), publish the second request
          delivery: POST, insert the attempt (1 tx), publish the result
          router: count the sale (1 tx), publish the outcome --> bench

Two worker processes (`--role router`, `--role delivery`) with Leadwire's prefetch (32 and 128)
and pool size, every message persistent with publisher confirms on quorum queues, posts with
aiohttp to the benchmark's buyer. What Leadwire adds on top of this is its own cost: validation,
duplicates, plans, caps, orders, the outbox and inbox, FastStream, pydantic, and the notifier's
copy of `lead.sold` (a seventh hop, left out here).

  python -m bench.design_floor --role router|delivery --amqp-url ... --database-url ... \\
      --namespace ns [--buyer-url http://127.0.0.1:port]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from bench.floor import no_reset, run, until_signalled

SALES = 2
BATCH_WAIT_SECONDS = 0.005  # --batch: how long a batch waits to fill

TABLES = (
    """CREATE TABLE IF NOT EXISTS design_floor_leads (
        idempotency_key text PRIMARY KEY,
        body jsonb NOT NULL,
        sales int NOT NULL DEFAULT 0,
        received_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS design_floor_posts (
        id bigserial PRIMARY KEY,
        idempotency_key text NOT NULL,
        sale int NOT NULL,
        status int NOT NULL,
        posted_at timestamptz NOT NULL DEFAULT now())""",
)


def queue_names(namespace: str) -> dict[str, str]:
    return {q: f"{namespace}.design-floor.{q}" for q in ("leads", "requests", "results", "out")}


async def declare(channel: aio_pika.abc.AbstractChannel, namespace: str) -> None:
    for name in queue_names(namespace).values():
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


async def delete(amqp_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in queue_names(namespace).values():
            await channel.queue_delete(name)
    finally:
        await connection.close()


def _message(body: bytes, key: str, sale: int) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        message_id=key,
        headers={"sale": sale},
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def router(channel: aio_pika.abc.AbstractChannel, pool: asyncpg.Pool, queues: dict[str, str]) -> None:
    async def publish(body: bytes, key: str, sale: int, queue: str) -> None:
        await channel.default_exchange.publish(_message(body, key, sale), routing_key=queue, timeout=30)

    async def on_lead(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        key = str(message.message_id)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO design_floor_leads (idempotency_key, body) VALUES ($1, $2::jsonb) ON CONFLICT DO NOTHING",
                key,
                message.body.decode(),
            )
        await publish(message.body, key, 1, queues["requests"])
        await message.ack()

    async def on_result(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        key = str(message.message_id)
        async with pool.acquire() as conn, conn.transaction():
            sales = await conn.fetchval(
                "UPDATE design_floor_leads SET sales = sales + 1 WHERE idempotency_key = $1 RETURNING sales", key
            )
        if sales < SALES:
            await publish(message.body, key, sales + 1, queues["requests"])
        else:
            await publish(message.body, key, sales, queues["out"])
        await message.ack()

    await (await channel.get_queue(queues["leads"])).consume(on_lead)
    await (await channel.get_queue(queues["results"])).consume(on_result)


async def delivery(
    channel: aio_pika.abc.AbstractChannel,
    pool: asyncpg.Pool,
    queues: dict[str, str],
    http: aiohttp.ClientSession,
    buyer_url: str,
) -> None:
    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        key = str(message.message_id)
        sale = int(str((message.headers or {}).get("sale", 1)))
        async with http.post(
            f"{buyer_url}/buyers/design-floor", data=message.body, headers={"content-type": "application/json"}
        ) as answer:
            await answer.read()
            status = answer.status
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO design_floor_posts (idempotency_key, sale, status) VALUES ($1, $2, $3)", key, sale, status
            )
        await channel.default_exchange.publish(
            _message(message.body, key, sale), routing_key=queues["results"], timeout=30
        )
        await message.ack()

    await (await channel.get_queue(queues["requests"])).consume(on_request)


# --- batched: several leads per message and per transaction (--batch N) ------------------------


class Batcher:
    """Collects one consumer's messages and hands them on in batches: `size` at most, or what came
    within `wait` seconds of the first. One batch at a time, so that acknowledging a batch's last
    message with multiple=True (the consumer has a channel of its own) acknowledges exactly the
    messages already handled."""

    def __init__(
        self, size: int, wait: float, handle: Callable[[list[aio_pika.abc.AbstractIncomingMessage]], Awaitable[None]]
    ) -> None:
        self.size, self.wait, self.handle = size, wait, handle
        self.pending: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.lock = asyncio.Lock()
        self.timer: asyncio.TimerHandle | None = None

    async def add(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.pending.append(message)
        if len(self.pending) >= self.size:
            await self.flush()
        else:
            self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.pending:
            self.timer = asyncio.get_running_loop().call_later(self.wait, lambda: asyncio.ensure_future(self.flush()))

    async def flush(self) -> None:
        async with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            while self.pending:
                batch, self.pending = self.pending[: self.size], self.pending[self.size :]
                await self.handle(batch)
                await batch[-1].ack(multiple=True)
                if len(self.pending) < self.size:
                    break
            self._arm()


def _batch_message(items: list[dict[str, Any]]) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps(items).encode(),
        message_id=str(uuid.uuid4()),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def batched_router(
    connection: aio_pika.abc.AbstractConnection, pool: asyncpg.Pool, queues: dict[str, str], size: int, prefetch: int
) -> None:
    publishing = await connection.channel(publisher_confirms=True)

    async def publish(message: aio_pika.Message, queue: str) -> None:
        await publishing.default_exchange.publish(message, routing_key=queue, timeout=30)

    async def on_leads(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
        keys, bodies = [str(m.message_id) for m in batch], [m.body.decode() for m in batch]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO design_floor_leads (idempotency_key, body)"
                " SELECT k, b::jsonb FROM unnest($1::text[], $2::text[]) AS t(k, b)"
                " ON CONFLICT DO NOTHING",
                keys,
                bodies,
            )
        await publish(
            _batch_message([{"key": k, "sale": 1, "body": b} for k, b in zip(keys, bodies, strict=True)]),
            queues["requests"],
        )

    async def on_results(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
        items = {i["key"]: i for m in batch for i in json.loads(m.body)}
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE design_floor_leads SET sales = sales + 1"
                " WHERE idempotency_key = ANY($1::text[]) RETURNING idempotency_key, sales",
                list(items),
            )
        again = [{**items[r["idempotency_key"]], "sale": r["sales"] + 1} for r in rows if r["sales"] < SALES]
        done = [items[r["idempotency_key"]] for r in rows if r["sales"] >= SALES]
        sends = [publish(_message(i["body"].encode(), i["key"], SALES), queues["out"]) for i in done]
        if again:
            sends.append(publish(_batch_message(again), queues["requests"]))
        await asyncio.gather(*sends)

    for queue, handle in ((queues["leads"], on_leads), (queues["results"], on_results)):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        batcher = Batcher(size, BATCH_WAIT_SECONDS, handle)
        await (await channel.get_queue(queue)).consume(batcher.add)


async def batched_delivery(
    channel: aio_pika.abc.AbstractChannel,
    pool: asyncpg.Pool,
    queues: dict[str, str],
    http: aiohttp.ClientSession,
    buyer_url: str,
) -> None:
    async def post(item: dict[str, Any]) -> int:
        async with http.post(
            f"{buyer_url}/buyers/design-floor", data=item["body"].encode(), headers={"content-type": "application/json"}
        ) as answer:
            await answer.read()
            return answer.status

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        items = json.loads(message.body)
        statuses = await asyncio.gather(*(post(i) for i in items))
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO design_floor_posts (idempotency_key, sale, status)"
                " SELECT * FROM unnest($1::text[], $2::int[], $3::int[])",
                [i["key"] for i in items],
                [i["sale"] for i in items],
                list(statuses),
            )
        await channel.default_exchange.publish(_batch_message(items), routing_key=queues["results"], timeout=30)
        await message.ack()

    await (await channel.get_queue(queues["requests"])).consume(on_request)


async def worker(
    role: str,
    amqp_url: str,
    database_url: str,
    namespace: str,
    buyer_url: str,
    prefetch: int,
    pool_size: int,
    batch: int = 1,
) -> None:
    queues = queue_names(namespace)
    # Released without asyncpg's reset query, as Leadwire's pool is (shared/db.py): the least I/O.
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=pool_size, reset=no_reset)
    async with pool.acquire() as conn, conn.transaction():
        # Both roles start together; IF NOT EXISTS alone races on the catalog.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('design_floor_tables'))")
        for table in TABLES:
            await conn.execute(table)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=prefetch)
    await declare(channel, namespace)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=prefetch * max(batch, 1)))
    if batch > 1 and role == "router":
        await batched_router(connection, pool, queues, batch, max(prefetch, 4 * batch))
    elif batch > 1:
        await batched_delivery(channel, pool, queues, http, buyer_url)
    elif role == "router":
        await router(channel, pool, queues)
    else:
        await delivery(channel, pool, queues, http, buyer_url)
    print(f"design floor {role} ready", flush=True)
    await until_signalled()
    await connection.close()
    await http.close()
    await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("router", "delivery"), required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--buyer-url", default="http://127.0.0.1:18199")
    parser.add_argument("--prefetch", type=int, default=None, help="default: Leadwire's (router 32, delivery 128)")
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument(
        "--batch", type=int, default=1, help="leads per internal message and per transaction (1: the design as it is)"
    )
    a = parser.parse_args()
    prefetch = a.prefetch or (32 if a.role == "router" else 128)
    run(worker(a.role, a.amqp_url, a.database_url, a.namespace, a.buyer_url, prefetch, a.pool_size, a.batch))
