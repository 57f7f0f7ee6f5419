"""Multiplexed request-reply over RabbitMQ: many requests in flight at once on one connection.

FastStream 0.7 serialises `broker.request` per broker behind a lock, so every request of a web
process would wait for the one before it. `RequestReply` instead keeps one reply queue per process
(exclusive, auto-deleted, named by the client so a robust reconnect re-declares the same name) and a
future per correlation id: a thousand concurrent page loads share the connection without waiting on
each other.

Every request is published persistent, `mandatory` (an unroutable request fails at once instead of
timing out) and with publisher confirms, and carries its deadline in the header `x-deadline-ms`
(unix milliseconds), so a service can refuse work whose caller has already given up. A reply must
carry the request's correlation id; a late reply to a request that timed out is dropped.

The reply queue is not a work queue: it has no dead-letter queue because nothing in it is work
(a reply nobody waits for any more is dropped on purpose).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel, AbstractRobustConnection
from pydantic import BaseModel, ValidationError

from shared import tracing

log = logging.getLogger("leadwire.rpc")

DEADLINE_HEADER = "x-deadline-ms"


class RequestFailed(Exception):
    """The request could not be sent (broker away, unroutable): nobody will answer it."""


@dataclass(frozen=True)
class Reply:
    body: bytes
    correlation_id: str
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not JSON)."""
        return json.loads(self.body)


def deadline_ms(timeout: float) -> int:
    return int((time.time() + timeout) * 1000)


class RequestReply:
    """One per process. `start()` before the first request, `close()` at shutdown."""

    def __init__(
        self, amqp_url: str, *, name: str = "leadwire", namespace: str = "leadwire", connect_timeout: float = 30.0
    ) -> None:
        self._url = amqp_url
        # Each connection attempt (the first and every reconnection): a wedged broker must not
        # hold one forever (Settings.amqp_connect_timeout).
        self._connect_timeout = connect_timeout
        self._reply_queue_name = f"{namespace}.rpc-replies.{name}.{uuid.uuid4().hex[:12]}"
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Future[Reply]] = {}

    @property
    def reply_queue(self) -> str:
        return self._reply_queue_name

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self._reply_queue_name}, timeout=self._connect_timeout
        )
        self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        assert self._channel is not None
        self._queue = await self._channel.declare_queue(self._reply_queue_name, exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RequestFailed("the request-reply client is closing"))
        self._waiting.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is None or future.done():
            log.debug("dropping a reply nobody waits for (correlation id %s)", message.correlation_id)
            return
        future.set_result(
            Reply(message.body, message.correlation_id or "", dict(message.headers or {}), message.content_type)
        )

    async def send(
        self,
        exchange: str,
        routing_key: str,
        body: BaseModel | dict[str, Any] | bytes,
        *,
        timeout: float,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> asyncio.Future[Reply]:
        """Publish a request (confirmed by the broker when this returns) and return the future its
        reply will complete, without waiting for it: the caller waits as it likes (for the reply
        or something else) and must call `forget(correlation_id)` when it stops waiting. Raises
        RequestFailed when the request could not be sent, TimeoutError when the publish itself
        outlasts `timeout`."""
        if timeout <= 0:
            raise ValueError("a request needs a positive timeout")
        if self._channel is None:
            raise RequestFailed("the request-reply client is not started")
        correlation_id = correlation_id or str(uuid.uuid4())
        if isinstance(body, BaseModel):
            payload = body.model_dump_json().encode()
        elif isinstance(body, bytes):
            payload = body
        else:
            payload = json.dumps(body, default=str).encode()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                target = (
                    await self._channel.get_exchange(exchange, ensure=False)
                    if exchange
                    else self._channel.default_exchange
                )
                await target.publish(
                    aio_pika.Message(
                        payload,
                        content_type="application/json",
                        correlation_id=correlation_id,
                        message_id=message_id or correlation_id,
                        reply_to=self._reply_queue_name,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers=_traced({**(headers or {}), DEADLINE_HEADER: deadline_ms(timeout)}),
                    ),
                    routing_key=routing_key,
                    mandatory=True,
                )
        except (asyncio.CancelledError, TimeoutError):
            self._waiting.pop(correlation_id, None)
            raise
        except Exception as exc:  # unroutable, channel closed, broker away
            self._waiting.pop(correlation_id, None)
            raise RequestFailed(f"{type(exc).__name__}: {exc}") from exc
        return future

    def forget(self, correlation_id: str) -> None:
        """Stop waiting for a reply `send` expects (a late reply is then dropped)."""
        self._waiting.pop(correlation_id, None)

    async def request(
        self,
        exchange: str,
        routing_key: str,
        body: BaseModel | dict[str, Any] | bytes,
        *,
        timeout: float,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Reply:
        """Publish a request and wait for its reply. Raises TimeoutError when no reply comes within
        `timeout` seconds (publish included), RequestFailed when the request could not be sent."""
        correlation_id = correlation_id or str(uuid.uuid4())
        started = time.monotonic()
        future = await self.send(
            exchange,
            routing_key,
            body,
            timeout=timeout,
            headers=headers,
            message_id=message_id,
            correlation_id=correlation_id,
        )
        try:
            # One budget for the publish and the reply, as the request's deadline header says.
            async with asyncio.timeout(timeout - (time.monotonic() - started)):
                return await future
        finally:
            self.forget(correlation_id)


def _traced(headers: dict[str, Any]) -> dict[str, Any]:
    """The request joins the caller's trace (shared/tracing.py)."""
    tracing.inject(headers)
    return headers


# --- A command and its typed answer ---------------------------------------------------------------

AnswerT = TypeVar("AnswerT", bound=BaseModel)


@dataclass(frozen=True)
class NoAnswer:
    """No reply within the timeout: the command is durable in the service's queue and will be
    handled; its outcome is not known yet."""


@dataclass(frozen=True)
class NotSent:
    """The command never reached the broker: nothing will happen."""


@dataclass(frozen=True)
class Refused:
    """The service refused the command (`ok: false`, its error code and reason) or answered in a
    way the caller does not understand (`bad_reply`)."""

    error: str
    message: str


async def command(
    rpc: RequestReply,
    exchange: str,
    routing_key: str,
    body: BaseModel,
    answer: type[AnswerT],
    *,
    timeout: float,
    message_id: str | None = None,
    service: str = "the service",
) -> AnswerT | NoAnswer | NotSent | Refused:
    """Send one command and read its reply as `answer`, an error reply (docs/messages.md) as
    Refused: what a web page needs to say "done", "refused because …", "not confirmed yet" or "not
    sent" without a case of its own. `message_id` is the receiver's inbox key where it has one."""
    try:
        reply = await rpc.request(exchange, routing_key, body, timeout=timeout, message_id=message_id)
    except TimeoutError:
        return NoAnswer()
    except RequestFailed as exc:
        log.warning("%s could not be sent: %s", routing_key, exc)
        return NotSent()
    try:
        data: Any = reply.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Refused("bad_reply", f"{service} sent a reply that is not JSON")
    # The shared error reply ({ok: false, error, message}); an answer model may say ok: false in
    # its own terms (an order command's refusal: error, no message), and is read as that model.
    if data.get("ok") is False and "error" in data and "message" in data:
        return Refused(str(data["error"]), str(data["message"]))
    try:
        return answer.model_validate(data)
    except ValidationError:
        return Refused("bad_reply", f"{service} sent a reply this caller does not understand")
