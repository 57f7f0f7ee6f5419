"""What every Leadwire service process shares: broker, pool, catalog, outbox relay, failure routing.

A service module builds a `Runtime`, registers its handlers with `runtime.subscriber(queue)`, and
exposes `app = runtime.app()` for `faststream run services.<name>.main:app`.

Failure routing (per queue, as a router middleware because FastStream 0.7 has no
subscriber-level middlewares):
- a transient error (database or broker unreachable, timeout) parks the message in the queue's
  next retry tier (a TTL queue that dead-letters back), with an `x-retry-count` header we own;
- any other error (not JSON, wrong contract, a bug) and an exhausted retry budget send the
  message to the queue's dead-letter queue with the error in `x-error` headers, and record it in
  the `dead_letters` table. The consumer acks only after that publish is confirmed. A message
  with `reply_to` also gets an `ErrorReply` with the reason (shared/contracts/errors.py).

Every body is read as JSON whatever its `content_type` says (every Leadwire message is JSON; a
source that labels a JSON lead `text/plain` should not lose it). A NUL character in the AMQP
`message_id`, `correlation_id` or `reply_to` is refused before the handler runs (PostgreSQL cannot
store it; see shared/contracts/base.py for bodies), except where a handler keeps such a message
as data (the router keeps and rejects a lead).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import aio_pika
import aiormq
import asyncpg
from faststream import BaseMiddleware, ContextRepo, FastStream
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitRouter
from faststream.specification import AsyncAPI
from pydantic import BaseModel, ValidationError

from shared import db, health, logs, metrics, outbox, tracing
from shared.background import Loop, Work, every
from shared.batching import Batcher
from shared.catalog.cache import CatalogCache
from shared.catalog.model import Catalog
from shared.catalog.store import NOTIFY_CHANNEL as CATALOG_CHANNEL
from shared.contracts.base import NUL, NUL_MESSAGE, without_nul
from shared.contracts.errors import BadMessage, ErrorReply, Refused
from shared.listener import PgListener
from shared.outbox import NOTIFY_CHANNEL as OUTBOX_CHANNEL
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.topology import WORK_QUEUES, Topology, topic_matches

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


def validation_summary(exc: ValidationError) -> str:
    """Every problem of a validation error, without the input (which may hold a password)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )[:1000]


def error_reply(exc: BaseException) -> ErrorReply:
    """What a caller that set `reply_to` is told about a message that was dead-lettered."""
    if isinstance(exc, Refused):
        return ErrorReply(error="refused", message=without_nul(str(exc)))
    if isinstance(exc, ValidationError):
        return ErrorReply(error="bad_request", message=without_nul(validation_summary(exc)))
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return ErrorReply(error="bad_request", message=f"the body is not JSON ({exc})")
    if isinstance(exc, BadMessage):
        return ErrorReply(error="bad_request", message=without_nul(str(exc)))
    if isinstance(exc, TRANSIENT):
        return ErrorReply(error="unavailable", message=without_nul(describe(exc)))
    # A bug's text may describe internals: the caller gets the kind, the operator the details.
    return ErrorReply(error="failed", message=f"{type(exc).__name__}: the message could not be handled")


def decode_json(msg: StreamMessage[Any]) -> Any:
    """Every body as JSON, whatever its content type says (FastStream would hand a `text/plain`
    body to the handler as a string, and the contract would fail with a misleading error)."""
    return json.loads(msg.body)


def refuse_nul_properties(raw: aio_pika.abc.AbstractIncomingMessage) -> None:
    for name in ("message_id", "correlation_id", "reply_to"):
        value = getattr(raw, name)
        if isinstance(value, str) and NUL in value:
            raise BadMessage(f"AMQP property {name} {NUL_MESSAGE}")


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
    def __init__(
        self, msg: Any, /, *, context: ContextRepo, runtime: Runtime, queue: str, keeps_bad_properties: bool
    ) -> None:
        super().__init__(msg, context=context)
        self.runtime = runtime
        self.queue = queue
        self.keeps_bad_properties = keeps_bad_properties

    async def consume_scope(self, call_next: Callable[..., Any], msg: StreamMessage[Any]) -> Any:
        _incoming.set(msg.raw_message)
        relay = self.runtime.relay
        # Outbox rows the handler commits wake this process's relay directly, without a NOTIFY.
        written = outbox.handler_scope() if relay is not None else None
        # Counts of state changes wait for the handler to return (its transaction committed).
        counts = metrics.handler_scope()
        try:
            raw = msg.raw_message
            # The ids every log line of this handler carries (shared/logs.py); the body is decoded
            # once, FastStream keeps it for the handler.
            tracing.start(raw.headers)
            logs.enter_message(raw.message_id, None)
            if not self.keeps_bad_properties:
                refuse_nul_properties(raw)
            logs.enter_message(raw.message_id, await msg.decode())
            result = await call_next(msg)
            metrics.apply(counts)
            return result
        except asyncio.CancelledError:
            raise  # shutdown: the channel closes and the broker requeues the message
        except Exception as exc:  # noqa: BLE001 - every failure is routed, none crashes the consumer
            await self.runtime.route_failure(self.queue, msg, exc)
            return None
        finally:
            if written and relay is not None:
                relay.wake()


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
Item = TypeVar("Item")
Result = TypeVar("Result")


class Consumer:
    """One work queue whose messages are told apart by the key they were published with (kept in
    `x-original-routing-key` after a stay in a retry queue): one typed handler per key or topic
    pattern, so each kind has its contract and its AsyncAPI payload, as a one-kind queue's
    handler has. A message with a key no handler takes is dead-lettered.

        with runtime.consumer("returns.commands", title="...") as commands:

            @commands.on("return.request")
            async def on_return_request(request: ReturnRequest) -> None: ...
    """

    def __init__(self, runtime: Runtime, logical_queue: str, **kwargs: Any) -> None:
        self.runtime = runtime
        self.queue = logical_queue
        self._subscriber, self._router = runtime._subscription(logical_queue, **kwargs)
        self._patterns: list[str] = []
        self._sealed = False

    def on(self, *patterns: str) -> Callable[[Handler], Handler]:
        """Handle the messages published with a key matching one of `patterns` (AMQP topic
        patterns: `appointment.create`, `notify.#`). Keys are tried in registration order."""

        def published_with(message: StreamMessage[Any]) -> bool:
            key = original_routing_key(message.raw_message)
            return any(topic_matches(p, key) for p in patterns)

        def register(handler: Handler) -> Handler:
            if self._sealed:
                raise RuntimeError(f"{self.queue}: every handler is registered inside the `with` block")
            self._patterns.extend(patterns)
            self._subscriber(handler, filter=published_with)
            return handler

        return register

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is None:
            self.seal()

    def seal(self) -> None:
        """After the last handler (the `with` block's end): anything else is a message this queue
        has no use for. A handler of its own, so that it is refused inside the failure routing
        (dead-lettered with the reason), not by FastStream outside it."""

        async def no_handler() -> None:
            raise BadMessage(
                f"{self.queue} has no handler for routing key {original_routing_key(incoming())!r}"
                f" (it takes {', '.join(self._patterns)})"
            )

        self._subscriber(no_handler)
        self._sealed = True
        self.runtime.broker.include_router(self._router)


class Runtime:
    def __init__(self, name: str, settings: Settings | None = None) -> None:
        self.name = name
        self.settings = settings or Settings()
        self.topology = Topology(self.settings.namespace, self.settings.retry_delays)
        self.metrics = metrics.enabled(self.settings.metrics_port)
        self.tracer_provider = tracing.provider(name, self.settings)
        middlewares: list[Any] = []
        if self.tracer_provider is not None:
            from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware

            middlewares.append(RabbitTelemetryMiddleware(tracer_provider=self.tracer_provider))
        if self.metrics:
            middlewares.append(metrics.faststream_middleware(name))
        self.broker = RabbitBroker(
            self.settings.amqp_url,
            middlewares=middlewares,
            # Its lines go through the root logger's handler (shared/logs.py), as JSON.
            logger=logging.getLogger("leadwire.broker"),
            # A bounded prefetch; unroutable mandatory publishes raise instead of vanishing.
            default_channel=Channel(prefetch_count=self.settings.prefetch_for(name), on_return_raises=True),
            graceful_timeout=15.0,
            # Each connection attempt, the first and every reconnection (aio-pika keeps it).
            timeout=self.settings.amqp_connect_timeout,
            app_id=f"leadwire-{name}",
            # Per-message logs at DEBUG: at hundreds of leads per second INFO lines cost real CPU.
            log_level=logging.DEBUG,
        )
        self._pool: asyncpg.Pool | None = None
        self._catalog_cache: CatalogCache | None = None
        self.relay: OutboxRelay | None = None  # None until the background work starts
        self._listener: PgListener | None = None
        # The service's own loops (a scheduler, a sweep), by name; the plumbing's join them at start.
        self.loops: dict[str, Loop] = {}
        self._running: list[Loop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self.dead_lettered = 0
        self.batchers: dict[str, Batcher[Any, Any]] = {}  # by queue, for tests and the benchmark
        self.metrics_port: int | None = None  # where /metrics is served, once running
        self._sampler_channel: aio_pika.abc.AbstractChannel | None = None
        self.consumer_id = f"{name}@{socket.gethostname()}:{os.getpid()}"
        self.started_at = datetime.now(UTC)

    # --- handlers --------------------------------------------------------------------------------

    def subscriber(self, logical_queue: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Register the one handler of one of the topology's work queues, with failure routing.
        Its parameter's type is the message contract: FastStream validates every message against
        it (a message that breaks it is dead-lettered) and documents it in the AsyncAPI schema."""
        subscriber, router = self._subscription(logical_queue, **kwargs)

        def register(handler: Handler) -> Handler:
            subscriber(handler)
            self.broker.include_router(router)
            return handler

        return register

    def consumer(self, logical_queue: str, **kwargs: Any) -> Consumer:
        """A work queue that carries several kinds of message, told apart by routing key: register
        one typed handler per key with `@consumer.on(key)`."""
        return Consumer(self, logical_queue, **kwargs)

    def batcher(
        self,
        queue: str,
        run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        run_one: Callable[[Item], Awaitable[Result]],
    ) -> Batcher[Item, Result]:
        """Adaptive batching for a queue's handler (shared/batching.py): the handler submits its
        item and returns its result. Sized by the settings (`LEADWIRE_BATCH_LIMIT`, at most the
        queue's prefetch; `LEADWIRE_BATCH_CONCURRENCY`)."""
        limit = min(self.settings.batch_limit, self.settings.prefetch_for(self.name))
        batcher = Batcher(
            queue, run_batch, run_one, limit=limit, concurrency=self.settings.batch_concurrency, scope=self._effects
        )
        self.batchers[queue] = batcher
        return batcher

    @asynccontextmanager
    async def _effects(self) -> AsyncIterator[None]:
        """What a handler's middleware does around it, for a batch run outside any handler: the
        outbox rows it writes wake this process's relay, and its metrics count, once it returned
        (committed); a failed batch counts nothing."""
        written = outbox.handler_scope() if self.relay is not None else None
        counts = metrics.handler_scope()
        try:
            yield
            metrics.apply(counts)
        finally:
            if written and self.relay is not None:
                self.relay.wake()

    def _subscription(
        self, logical_queue: str, *, keeps_bad_properties: bool = False, **kwargs: Any
    ) -> tuple[Any, RabbitRouter]:
        """`keeps_bad_properties`: the handler takes a NUL in message_id / correlation_id / reply_to
        as data to report (the router's leads) instead of having the message refused."""
        routing = partial(FailureRouting, runtime=self, queue=logical_queue, keeps_bad_properties=keeps_bad_properties)
        router = RabbitRouter(middlewares=[routing])
        # Never an implicit reply (FastStream's would also follow a failed message): replies go
        # through the outbox when the outcome is known, or through `reply` (request-reply).
        subscriber = router.subscriber(
            # Fenced to its own queues (LEADWIRE_TOPOLOGY=own): consume, never declare nor bind.
            self.topology.queue(logical_queue, declare=self.settings.topology == "all"),
            self.topology.exchange_for(logical_queue),
            no_reply=True,
            decoder=decode_json,
            **kwargs,
        )
        return subscriber, router

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "runtime not started"
        return self._pool

    @property
    def catalog_cache(self) -> CatalogCache:
        assert self._catalog_cache is not None, "runtime not started"
        return self._catalog_cache

    @property
    def catalog(self) -> Catalog:
        return self.catalog_cache.catalog

    def crash_point(self, name: str) -> None:
        """Fault injection for tests: die here, without cleanup, when told to."""
        if self.settings.crash_point == name:
            log.error("crash point %s reached: exiting", name)
            os._exit(86)

    async def reply(self, raw: aio_pika.abc.AbstractIncomingMessage, message: BaseModel) -> None:
        """Answer a request at once (not through the outbox), under its correlation id. Not
        mandatory: a caller that gave up has no reply queue any more, and a late answer is simply
        dropped. Nothing is sent without a usable `reply_to`."""
        if not raw.reply_to or NUL in raw.reply_to:
            return
        await self.broker.publish(
            message.model_dump(mode="json"),
            queue=raw.reply_to,
            correlation_id=raw.correlation_id,
            mandatory=False,
            timeout=5.0,
        )

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
            metrics.MESSAGE_RETRIES.labels(queue).inc()
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
        # A contract's validation error names the values it refused: the line names the fields only.
        why = validation_summary(exc) if isinstance(exc, ValidationError) else describe(exc)
        log.error("%s: dead-lettering message %s: %s", queue, raw.message_id, why)
        await self.broker.publish(raw.body, queue=self.topology.dlq_name(queue), headers=headers, **common)
        self.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(queue).inc()
        try:
            # Text that came with the message may hold a NUL, which PostgreSQL refuses: the row
            # keeps U+FFFD in its place (the DLQ copy keeps everything byte for byte).
            await self.pool.execute(
                "INSERT INTO dead_letters (queue, message_id, error, body, headers) VALUES ($1, $2, $3, $4, $5)",
                self.topology.queue_name(queue),
                without_nul(raw.message_id),
                without_nul(describe(exc)),
                raw.body[:65536],
                without_nul({k: str(v) for k, v in headers.items()}),
            )
        except Exception:  # the DLQ holds the message and its error even when the database is away
            log.warning("could not record dead letter in the database", exc_info=True)
        try:
            await self.reply(raw, error_reply(exc))
        except Exception:  # the dead letter is safe; the caller's own timeout covers a lost answer
            log.warning("could not send the error reply of message %s", raw.message_id, exc_info=True)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await db.migrate(s.database_url)
        self._pool = await db.create_pool(s.database_url, min_size=s.db_pool_min, max_size=s.db_pool_max)
        self._catalog_cache = CatalogCache(self._pool, s.poll_interval)
        await self._catalog_cache.refresh()
        # Every queue exists before any subscriber consumes, so a failure can always be parked, and
        # before anything is published, so no event is published before the queue that holds it.
        await self._connect_broker()
        if s.topology == "own":
            await self.topology.check(s.amqp_url)
        else:
            await self.topology.declare(self.broker)

    async def _connect_broker(self) -> None:
        """Connect to RabbitMQ, waiting for it while it is down at start (refused, reset, or an
        attempt timed out) for up to `amqp_startup_wait` seconds: a process started during a broker
        restart waits for the broker instead of exiting. Once connected, aio-pika's robust
        connection does the reconnecting."""
        delay = 0.25
        deadline = time.monotonic() + self.settings.amqp_startup_wait
        while True:
            try:
                await self.broker.connect()
                return
            except (aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("RabbitMQ not reachable at start (%s); trying again in %.2f s", describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def every(self, name: str, interval: float, work: Work, *, delay_first: bool = False) -> Loop:
        """Run `work` every `interval` seconds while the service runs (a scheduler, a sweep; see
        shared/background.py): started after the broker, stopped at shutdown."""
        loop = every(interval, work, name=name, delay_first=delay_first)
        self.loops[name] = loop
        return loop

    async def start_background(self) -> None:
        cache = self.catalog_cache
        self.relay = OutboxRelay(self.pool, self.broker, self.topology, poll_interval=self.settings.poll_interval)
        self._listener = PgListener(
            self.settings.database_url,
            {OUTBOX_CHANNEL: self.relay.wake, CATALOG_CHANNEL: lambda *_payload: cache.wake()},
        )
        heartbeat = every(health.INTERVAL, partial(health.beat, self.broker, self.pool), name="heartbeat")
        catalog_report = every(health.INTERVAL, self._report_catalog, name="catalog version report")
        self._running = [self.relay.loop, cache.loop, heartbeat, catalog_report, *self.loops.values()]
        if self.metrics:
            self.metrics_port = metrics.serve(self.name, self.settings.metrics_port)
            self._running.append(every(self.settings.metrics_interval, self._sample_metrics, name="metrics sampler"))
        for loop in self._running:
            loop.rearm()
        self._tasks = [asyncio.create_task(loop.run()) for loop in self._running]
        self._tasks.append(asyncio.create_task(self._listener.run()))

    async def _report_catalog(self) -> None:
        await health.report(self.pool, self.consumer_id, self.name, self.catalog_cache.version, self.started_at)

    async def stop_background(self) -> None:
        for batcher in self.batchers.values():
            # How the batches ran, for reading a benchmark's or a fault run's logs.
            log.info("batching %s: %s", batcher.name, batcher.stats.summary())
        if self._running and self._pool is not None:
            # Best effort, and bounded: a stop must not wait on a database that is gone (the row
            # then shows as stale, which is what it is).
            try:
                await asyncio.wait_for(health.forget(self._pool, self.consumer_id), 3)
            except Exception:
                log.warning("could not remove this process's heartbeat row", exc_info=True)
        for loop in self._running:
            loop.stop()
        if self._listener is not None:
            self._listener.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        self._running = []

    async def _sample_metrics(self) -> int:
        """One round of the metrics sampler (shared/metrics.py `sample`), on a channel of its own:
        a passive declare of a missing queue closes its channel, never the consumers'."""
        if self._sampler_channel is None or self._sampler_channel.is_closed:
            connection = self.broker._connection
            if connection is None:
                return 0
            self._sampler_channel = await connection.channel()
        queues = {}
        for logical in WORK_QUEUES:
            queues[logical] = self.topology.queue_name(logical)
            queues[f"{logical}.dlq"] = self.topology.dlq_name(logical)
        return await metrics.sample(self.pool, self._sampler_channel, queues)

    def on_close(self, closer: Callable[[], Awaitable[Any]]) -> None:
        """Release a resource of the service's own (an HTTP client, an SMTP connection) at stop."""
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in self._closers:
            await closer()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

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
            logs.configure(self.name, self.settings)
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
