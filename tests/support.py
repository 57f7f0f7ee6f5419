"""Test helpers: a real HTTP buyer endpoint, a raw AMQP lead source, an outcome listener."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aio_pika
import asyncpg
import yaml

from shared.catalog.loader import parse_catalog
from shared.catalog.store import apply_catalog
from shared.settings import Settings


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class BuyerEndpoint:
    """A real HTTP server on 127.0.0.1 recording every request. `responses[path]` is a callable
    (ReceivedRequest) -> (status, body, delay_seconds); the default accepts with JSON."""

    received: list[ReceivedRequest] = field(default_factory=list)
    responses: dict[str, Callable[[ReceivedRequest], tuple[int, str, float]]] = field(default_factory=dict)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, status: int = 200, body: str = '{"status": "accepted"}', delay: float = 0.0) -> None:
        self.responses[path] = lambda _r: (status, body, delay)

    def paths(self) -> list[str]:
        return [r.path.split("?")[0] for r in self.received]


def start_buyer() -> tuple[BuyerEndpoint, Callable[[], None]]:
    endpoint = BuyerEndpoint()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = ReceivedRequest(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
            endpoint.received.append(request)
            responder = endpoint.responses.get(self.path.split("?")[0])
            status, body, delay = responder(request) if responder else (200, '{"status": "accepted"}', 0.0)
            if delay:
                time.sleep(delay)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return endpoint, stop


async def apply_yaml(database_url: str, text: str) -> int | None:
    from shared import db

    async with db.connection(database_url) as conn:
        return await apply_catalog(conn, parse_catalog(text))


def catalog_yaml(buyer: BuyerEndpoint, **overrides: Any) -> str:
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
    """Publish as a lead source would, with plain aio-pika (no FastStream)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{settings.namespace}.inbound", ensure=True)
        await exchange.publish(
            aio_pika.Message(
                data,
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


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, interval: float = 0.05
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def lead_statuses(conn: asyncpg.Connection) -> list[str]:
    return [r["status"] for r in await conn.fetch("SELECT status FROM leads ORDER BY received_at")]


async def dead_letters(settings: Settings, logical: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Drain and return what a work queue's dead-letter queue holds."""
    connection = await aio_pika.connect(settings.amqp_url)
    messages = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{settings.namespace}.{logical}.dlq", ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
    finally:
        await connection.close()
    return messages


def new_key() -> str:
    return str(uuid.uuid4())
