"""The broker as an outside party sees it: publish a message with plain aio-pika (no FastStream),
count a queue's consumers, wait until services consume."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
from pydantic import BaseModel


def encode(body: bytes | BaseModel | Mapping[str, Any] | list[Any]) -> bytes:
    """Bytes as they are; a contract or a JSON value as JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode()
    return json.dumps(body, default=str).encode()


async def publish(
    amqp_url: str,
    exchange: str,
    routing_key: str,
    body: bytes | BaseModel | Mapping[str, Any] | list[Any],
    *,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    content_type: str | None = "application/json",
    copies: int = 1,
) -> None:
    """Publish persistent, with publisher confirms, to an exchange that must exist (full name,
    e.g. `<ns>.inbound`; "" straight to the queue the key names), as a lead source or another
    service's relay would."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        # "": the default exchange, where the routing key is a queue's name.
        target = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=True)
        for _ in range(copies):
            await target.publish(
                aio_pika.Message(
                    encode(body),
                    message_id=message_id,
                    headers=headers,
                    reply_to=reply_to,
                    correlation_id=correlation_id,
                    content_type=content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )
    finally:
        await connection.close()


async def consumer_count(amqp_url: str, queue: str) -> int | None:
    """Consumers of a queue (full name) right now; None while it is not declared."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        return int(declared.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def wait_for_consumers(
    amqp_url: str,
    wanted: Mapping[str, int],
    *,
    timeout: float = 60.0,
    check: Callable[[], None] | None = None,
) -> None:
    """Wait until each queue (full name) has at least its number of consumers. `check` runs on
    every round (a launcher's `check_alive`, so a service that died fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        counts = {queue: await consumer_count(amqp_url, queue) for queue in wanted}
        if all((counts[q] or 0) >= n for q, n in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumers not ready in {timeout:g} s: {counts}, wanted {dict(wanted)}")
        await asyncio.sleep(0.3)
