"""Test helpers: a real HTTP buyer endpoint, a raw AMQP lead source, an outcome listener.

The buyer, the publisher and the catalog-from-text come from the shared harness (harness/), the
same ones scripts/demo.py, bench/ and faults/ use."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import yaml

from harness.broker import publish
from harness.buyer import FakeBuyer as FakeBuyer  # re-exported for the tests
from harness.catalog import apply_catalog_text
from shared.settings import Settings


def start_buyer() -> tuple[FakeBuyer, Callable[[], None]]:
    """A fake buyer serving from a thread of its own, and the function that stops it."""
    buyer = FakeBuyer().start()
    return buyer, buyer.stop


# A catalog from its YAML text, under the name the tests have always used.
apply_yaml = apply_catalog_text


def catalog_yaml(buyer: FakeBuyer, **overrides: Any) -> str:
    """A small catalog: one solar lead type, one source, two clients with one account each."""
    doc: dict[str, Any] = {
        "options": {"route_duplicate_leads": False},
        "lead_types": [
            {
                "id": "solar",
                "name": "Solar",
                "duplicate_fields": ["phone"],
                "fields": [
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                    {"name": "state", "type": "us_state", "required": True},
                    {"name": "email", "type": "email"},
                ],
            }
        ],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": [
            {"id": "acme", "name": "Acme", "external_ref": "ACME"},
            {"id": "bolt", "name": "Bolt", "external_ref": "BOLT"},
        ],
        "delivery_accounts": [
            {
                "id": "acme-post",
                "client": "acme",
                "lead_type": "solar",
                "price": "25.00",
                "priority": 0,
                "delivery": {
                    "method": "http",
                    "url": buyer.url("/acme"),
                    "timeout_seconds": 5,
                    "retry": {"count": 1, "delay_seconds": 1},
                },
            },
            {
                "id": "bolt-post",
                "client": "bolt",
                "lead_type": "solar",
                "price": "20.00",
                "priority": 1,
                "delivery": {
                    "method": "http",
                    "url": buyer.url("/bolt"),
                    "timeout_seconds": 5,
                    "retry": {"count": 1, "delay_seconds": 1},
                },
            },
        ],
    }
    doc.update(overrides)
    return yaml.safe_dump(doc)


def lead_body(phone: str = "415-555-0100", **fields: Any) -> dict[str, Any]:
    return {
        "lead_type": "solar",
        "source": "web",
        "fields": {"first_name": "Ada", "phone": phone, "state": "CA", **fields},
    }


async def publish_raw(
    settings: Settings,
    body: bytes | dict[str, Any],
    *,
    routing_key: str = "lead.solar",
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    content_type: str | None = "application/json",
) -> None:
    """Publish to the inbound exchange as a lead source would, with plain aio-pika (no FastStream)."""
    await publish(
        settings.amqp_url,
        f"{settings.namespace}.inbound",
        routing_key,
        body,
        message_id=message_id,
        headers=headers,
        reply_to=reply_to,
        correlation_id=correlation_id,
        content_type=content_type,
    )


async def publish_event(
    settings: Settings, routing_key: str, body: Any, *, message_id: str | None = None, copies: int = 1
) -> str:
    """Publish to the events exchange as another service's relay (or a buyer's system) would;
    returns the message id."""
    message_id = message_id or str(uuid.uuid4())
    await publish(
        settings.amqp_url, f"{settings.namespace}.events", routing_key, body, message_id=message_id, copies=copies
    )
    return message_id


class EventTap:
    """Binds a private queue to the events exchange and collects what arrives."""

    def __init__(self, settings: Settings, binding: str = "lead.*") -> None:
        self.settings = settings
        self.binding = binding
        self.messages: list[tuple[str, dict[str, Any], aio_pika.abc.AbstractIncomingMessage]] = []
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def __aenter__(self) -> EventTap:
        self._connection = await aio_pika.connect_robust(self.settings.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            f"{self.settings.namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, self.binding)

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.messages.append((message.routing_key or "", json.loads(message.body), message))

        await queue.consume(collect)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    def bodies(self, routing_key: str | None = None) -> list[dict[str, Any]]:
        return [b for k, b, _ in self.messages if routing_key is None or k == routing_key]


async def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> None:
    """Wait until `predicate()` (or what it returns, when that is awaitable) is truthy: a bool, a
    non-empty list of received messages, a row."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def lead_statuses(conn: asyncpg.Connection) -> list[str]:
    return [r["status"] for r in await conn.fetch("SELECT status FROM leads ORDER BY received_at")]


@dataclass(frozen=True)
class DeadLetter:
    """A message as a dead-letter queue holds it."""

    message_id: str | None
    routing_key: str | None
    body: bytes
    headers: dict[str, Any]  # x-error, x-error-type, x-retry-count (an int), x-original-queue...
    reply_to: str | None
    correlation_id: str | None


async def dead_letters(settings: Settings, logical: str) -> list[DeadLetter]:
    """Drain and return what a work queue's dead-letter queue holds."""
    connection = await aio_pika.connect(settings.amqp_url)
    messages = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{settings.namespace}.{logical}.dlq", ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(
                DeadLetter(
                    message.message_id,
                    message.routing_key,
                    message.body,
                    dict(message.headers or {}),
                    message.reply_to,
                    message.correlation_id,
                )
            )
    finally:
        await connection.close()
    return messages


def new_key() -> str:
    return str(uuid.uuid4())
