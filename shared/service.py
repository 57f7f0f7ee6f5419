"""What every Leadwire service process shares: broker, pool, catalog, outbox relay, failure routing.

A service module builds a `Runtime`, registers its handlers with `runtime.subscriber(queue)`, and
exposes `app = runtime.app()` for `faststream run services.<name>.main:app`.

Failure routing (per queue, as a router middleware because FastStream 0.7 has no
subscriber-level middlewares):
- a transient error (database or broker unreachable, timeout) parks the message in the queue's
  next retry tier (a TTL queue that dead-letters back), with an `x-retry-count` header we own;
- any other error (not JSON, wrong contract, a bug) and an exhausted retry budget send the
  message to the queue's dead-letter queue with the error in `x-error` headers, and record it in
  the `dead_letters` table. The consumer acks only after that publish is confirmed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import asyncpg
from faststream import BaseMiddleware, ContextRepo, FastStream
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitRouter
from faststream.specification import AsyncAPI

from shared import db, health, outbox
from shared.catalog.cache import CatalogCache
from shared.catalog.model import Catalog
from shared.catalog.store import NOTIFY_CHANNEL as CATALOG_CHANNEL
from shared.listener import PgListener
from shared.outbox import NOTIFY_CHANNEL as OUTBOX_CHANNEL
from shared.outbox import OutboxRelay
from shared.settings import Settings

log = logging.getLogger("leadwire")


class TransientError(Exception):
    """Raised by a use case for a failure worth retrying later (e.g. a dependency is down)."""


TRANSIENT = (
    TransientError,
    TimeoutError,
    ConnectionError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.CannotConnectNowError,
    # The client-side state error of a connection broken mid-operation (seen after
    # pg_terminate_backend in the fault run); a retry takes a fresh connection.
    asyncpg.InternalClientError,
)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "…"


# The AMQP message being handled, for handlers that need its properties. Set by the middleware
# below; read with incoming(). Cheaper than a `message: RabbitMessage` handler parameter, which
# FastStream resolves as a sync dependency in a worker thread on every message.
_incoming: ContextVar[aio_pika.abc.AbstractIncomingMessage] = ContextVar("leadwire_incoming")


def incoming() -> aio_pika.abc.AbstractIncomingMessage:
    """The raw AMQP message of the handler that is running."""
    return _incoming.get()


def original_routing_key(raw: aio_pika.abc.AbstractIncomingMessage) -> str:
    """The key a message was published with, also after a stay in a retry queue (which
    re-delivers it under the queue's name)."""
    return str((raw.headers or {}).get("x-original-routing-key") or raw.routing_key or "")


class FailureRouting(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: ContextRepo, runtime: Runtime, queue: str) -> None:
        super().__init__(msg, context=context)
        self.runtime = runtime
        self.queue = queue

    async def consume_scope(self, call_next: Callable[..., Any], msg: StreamMessage[Any]) -> Any:
        _incoming.set(msg.raw_message)
        relay = self.runtime.relay
        # Outbox rows the handler commits wake this process's relay directly, without a NOTIFY.
        written = outbox.handler_scope() if relay is not None else None
        try:
            return await call_next(msg)
        except asyncio.CancelledError:
            raise  # shutdown: the channel closes and the broker requeues the message
        except Exception as exc:  # noqa: BLE001 - every failure is routed, none crashes the consumer
            await self.runtime.route_failure(self.queue, msg, exc)
            return None
        finally:
            if written:
                relay.wake()


class Runtime:
    def __init__(self, name: str, settings: Settings | None = None) -> None:
        from shared.topology import Topology

        self.name = name
        self.settings = settings or Settings()
        self.topology = Topology(self.settings.namespace, self.settings.retry_delays)
        self.broker = RabbitBroker(
            self.settings.amqp_url,
            # A bounded prefetch; unroutable mandatory publishes raise instead of vanishing.
            default_channel=Channel(prefetch_count=self.settings.prefetch_for(name), on_return_raises=True),
            graceful_timeout=15.0,
            app_id=f"leadwire-{name}",
            # Per-message logs at DEBUG: at hundreds of leads per second INFO lines cost real CPU.
            log_level=logging.DEBUG,
        )
        self.pool: asyncpg.Pool | None = None
        self.catalog_cache: CatalogCache | None = None
        self.relay: OutboxRelay | None = None
        self._listener: PgListener | None = None
        self._stop_heartbeat: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self._background: list[Callable[[], Awaitable[None]]] = []
        self._own_tasks: list[asyncio.Task[None]] = []
        self.dead_lettered = 0
        self.consumer_id = f"{name}@{socket.gethostname()}:{os.getpid()}"

    # --- handlers --------------------------------------------------------------------------------

    def subscriber(self, logical_queue: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        """Register a handler on one of the topology's work queues, with failure routing."""
        router = RabbitRouter(middlewares=[partial(FailureRouting, runtime=self, queue=logical_queue)])
        # Replies are sent through the outbox when the outcome is known, never implicitly; an
        # RPC handler (portal_auth) passes no_reply=False to answer with its return value.
        kwargs.setdefault("no_reply", True)
        decorator = router.subscriber(
            self.topology.queue(logical_queue),
            self.topology.exchange_for(logical_queue),
            **kwargs,
        )

        def register(handler: Callable[..., Any]) -> Any:
            wrapped = decorator(handler)
            self.broker.include_router(router)
            return wrapped

        return register

    def publishes(self, routing_key: str, schema: type, description: str = "") -> None:
        """Document an event this service emits (through the outbox) in its AsyncAPI schema."""
        self.broker.publisher(
            exchange=self.topology.events,
            routing_key=routing_key,
            schema=schema,
            persist=True,
            title=f"{self.name}: {routing_key}",
            description=description,
        )

    @property
    def catalog(self) -> Catalog:
        assert self.catalog_cache is not None, "runtime not started"
        return self.catalog_cache.catalog

    def crash_point(self, name: str) -> None:
        """Fault injection for tests: die here, without cleanup, when told to."""
        if self.settings.crash_point == name:
            log.error("crash point %s reached: exiting", name)
            os._exit(86)

    async def route_failure(self, queue: str, msg: StreamMessage[Any], exc: Exception) -> None:
        raw = msg.raw_message
        headers = dict(raw.headers or {})
        retries = int(headers.get("x-retry-count", 0) or 0)
        common = dict(
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            reply_to=raw.reply_to,
            content_type=raw.content_type,
            persist=True,
            timeout=10,
        )
        # Parked messages come back through the default exchange under the queue's name; keep the
        # key they were published with for handlers that dispatch on it.
        headers.setdefault("x-original-routing-key", raw.routing_key)
        if isinstance(exc, TRANSIENT) and retries < len(self.topology.retry_delays):
            headers.update({"x-retry-count": retries + 1, "x-last-error": describe(exc)})
            log.warning("%s: transient failure, retry %d: %s", queue, retries + 1, describe(exc))
            await self.broker.publish(
                raw.body, queue=self.topology.retry_name(queue, retries), headers=headers, **common
            )
            return
        headers.update(
            {
                "x-error": describe(exc),
                "x-error-type": type(exc).__name__,
                "x-original-queue": self.topology.queue_name(queue),
                "x-dead-lettered-at": datetime.now(UTC).isoformat(),
                "x-dead-lettered-by": self.consumer_id,
            }
        )
        log.error("%s: dead-lettering message %s: %s", queue, raw.message_id, describe(exc))
        await self.broker.publish(raw.body, queue=self.topology.dlq_name(queue), headers=headers, **common)
        self.dead_lettered += 1
        try:
            await self.pool.execute(
                "INSERT INTO dead_letters (queue, message_id, error, body, headers) VALUES ($1, $2, $3, $4, $5)",
                self.topology.queue_name(queue),
                raw.message_id,
                describe(exc),
                raw.body[:65536],
                {k: str(v) for k, v in headers.items()},
            )
        except Exception:  # the DLQ holds the message and its error even when the database is away
            log.warning("could not record dead letter in the database", exc_info=True)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await db.migrate(s.database_url)
        self.pool = await db.create_pool(s.database_url, min_size=s.db_pool_min, max_size=s.db_pool_max)
        self.catalog_cache = CatalogCache(self.pool, s.poll_interval)
        await self.catalog_cache.refresh()
        # Declare every queue before any subscriber consumes, so a failure can always be parked.
        await self.broker.connect()
        await self.topology.declare(self.broker)

    async def start_background(self) -> None:
        assert self.pool is not None and self.catalog_cache is not None
        self.relay = OutboxRelay(self.pool, self.broker, self.topology, poll_interval=self.settings.poll_interval)
        self._listener = PgListener(
            self.settings.database_url,
            {OUTBOX_CHANNEL: self.relay.wake, CATALOG_CHANNEL: lambda *_payload: self.catalog_cache.wake()},
        )
        self._stop_heartbeat = asyncio.Event()
        for coro in (
            self.relay.run(),
            self.catalog_cache.run(),
            self._listener.run(),
            health.heartbeat(self.broker, self.pool, self._stop_heartbeat),
        ):
            self._tasks.append(asyncio.create_task(coro))
        for factory in self._background:
            self._own_tasks.append(asyncio.create_task(factory()))

    def add_background(self, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a loop of the service's own (a scheduler) while the service runs; cancelled at stop."""
        self._background.append(factory)

    async def stop_background(self) -> None:
        for task in self._own_tasks:
            task.cancel()
        await asyncio.gather(*self._own_tasks, return_exceptions=True)
        self._own_tasks.clear()
        for stoppable in (self.relay, self.catalog_cache, self._listener):
            if stoppable is not None:
                stoppable.stop()
        if self._stop_heartbeat is not None:
            self._stop_heartbeat.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
        self._tasks.clear()

    def on_close(self, closer: Callable[[], Awaitable[Any]]) -> None:
        """Release a resource of the service's own (an HTTP client, an SMTP connection) at stop."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in self._closers:
            await closer()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """Run the service in-process (tests, the demo): start, consume, stop."""
        await self.start()
        try:
            await self.broker.start()
            await self.start_background()
            yield self
        finally:
            await self.stop_background()
            await self.broker.stop()
            await self.close()

    def app(self, description: str = "") -> FastStream:
        @asynccontextmanager
        async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.close()

        app = FastStream(
            self.broker,
            lifespan=lifespan,
            specification=AsyncAPI(title=f"leadwire {self.name}", version="1", description=description),
        )
        app.after_startup(self.start_background)
        app.on_shutdown(self.stop_background)
        return app
