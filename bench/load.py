"""What the benchmark sends and how it watches: the leads, the publisher, the outcome listener.

The same publisher feeds Leadwire and the floor pipeline, so both are offered identical load.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika

STATES = ("CA", "TX", "FL", "NY", "AZ", "NV", "CO", "WA", "OR", "GA")
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Dennis")
# Phones of benchmark leads start with 2, those of the seeded history with 3: never the same
# person by accident.
PHONE_BASE = 2_000_000_000
HISTORY_PHONE_BASE = 3_000_000_000


def make_leads(
    n: int, tag: str, *, duplicate_share: float = 0.05, seed: int = 8, first_phone: int = PHONE_BASE
) -> list[tuple[str, bytes]]:
    """(idempotency key, JSON body) for n leads; about `duplicate_share` of them repeat the phone of
    a recent lead (the same person sent again, under a new key). Phones count up from
    `first_phone`: a phase measured again over the leads of the last one needs new people."""
    rng = random.Random(seed)
    leads: list[tuple[str, bytes]] = []
    phones: list[int] = []
    for i in range(n):
        key = f"{tag}-{i}"
        if phones and rng.random() < duplicate_share:
            phone = rng.choice(phones[-500:])
        else:
            phone = first_phone + i
            phones.append(phone)
        body = {
            "lead_type": "solar",
            "source": "web",
            "fields": {
                "ref": key,
                "first_name": rng.choice(FIRST_NAMES),
                "phone": str(phone),
                "email": f"p{phone}@example.com",
                "state": rng.choice(STATES),
                "homeowner": "yes" if rng.random() < 0.75 else "no",
                "monthly_bill": str(rng.randint(40, 400)),
            },
        }
        leads.append((key, json.dumps(body).encode()))
    return leads


@dataclass
class Publisher:
    """Publishes persistent messages with publisher confirms, many confirms in flight at once."""

    amqp_url: str
    window: int = 256
    sent_at: dict[str, float] = field(default_factory=dict)
    errors: int = 0

    async def run(
        self, exchange_name: str, routing_key: str, messages: list[tuple[str, bytes]], rate: float | None = None
    ) -> None:
        """At full speed (rate None) or at a fixed offered rate in messages per second."""
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = (
                channel.default_exchange
                if exchange_name == ""
                else await channel.get_exchange(exchange_name, ensure=False)
            )
            slots = asyncio.Semaphore(self.window)
            tasks: set[asyncio.Task[None]] = set()

            async def one(key: str, body: bytes) -> None:
                try:
                    await exchange.publish(
                        aio_pika.Message(
                            body,
                            content_type="application/json",
                            message_id=key,
                            headers={"idempotency-key": key},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=routing_key,
                        timeout=30,
                    )
                except Exception:  # noqa: BLE001 - counted and reported: a lost publish shows as a missing outcome
                    self.errors += 1
                finally:
                    slots.release()

            start = time.monotonic()
            for i, (key, body) in enumerate(messages):
                if rate is not None:
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await slots.acquire()
                self.sent_at[key] = time.time()
                task = asyncio.create_task(one(key, body))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            await connection.close()


@dataclass
class Listener:
    """Consumes a queue and records, per key, when its message arrived (wall clock)."""

    amqp_url: str
    key_of: Callable[[aio_pika.abc.AbstractIncomingMessage], str | None]
    seen: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    status_of: Callable[[aio_pika.abc.AbstractIncomingMessage], str] | None = None
    # Broker connection losses seen (a restart mid-run): the measurement is disturbed.
    reconnects: int = 0
    _connection: Any = None

    async def start(self, queue_name: str) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._connection.reconnect_callbacks.add(self._reconnected)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue(queue_name, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.time()
            key = self.key_of(message)
            if key is not None and key not in self.seen:
                self.seen[key] = now
                if self.status_of is not None:
                    status = self.status_of(message)
                    self.statuses[status] = self.statuses.get(status, 0) + 1

        await queue.consume(on_message, no_ack=True)

    def _reconnected(self, *_: Any) -> None:
        self.reconnects += 1

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (nearest rank)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(p * len(ordered) + 0.999999) - 1))] * 1000, 1)

    return {
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1] * 1000, 1),
        "n": len(ordered),
    }
