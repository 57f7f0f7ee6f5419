"""The broker topology, declared in one place.

Two durable topic exchanges:
  <ns>.inbound   lead sources publish leads here (routing key `lead.<lead_type>`)
  <ns>.events    every event and command between services

Every work queue Q is a quorum queue with an explicit delivery limit (a safety net for messages
that crash their consumer) and dead-letters into Q.dlq. Each Q also has TTL "wait" queues
Q.retry.<n> that dead-letter back into Q: transient failures are parked there instead of
sleeping in a handler.

The whole topology must exist before any event is published, so that an event is never published
before the queue that should hold it exists, whatever order the services start in. Who declares
it depends on `LEADWIRE_TOPOLOGY` (shared/settings.py):
- `all` (the default, with one broker user for everything, e.g. `guest`): every service declares
  the whole topology at start-up, as a privileged user may;
- `own` (each service with a broker user of its own, `leadwire broker users`): the topology is
  declared once by a privileged step (`leadwire broker setup`, which `broker users` also runs) and
  each service only checks, with passive declarations, that all of it exists before it starts,
  then consumes its own queues without declaring or binding them. A passive declaration needs no
  permission; declaring a queue that has a dead-letter exchange needs read permission on it, and
  binding needs read permission on the exchange (RabbitMQ's access control table), which is why a
  fenced service must not declare: its user may read its own work queues only.
Many processes declaring the same new quorum queue at once can meet a transient refusal from the
broker; each declaration is retried with backoff (`declare_with_retries`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import aio_pika
import aiormq
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

log = logging.getLogger("leadwire.topology")
T = TypeVar("T")

# Quorum queues count deliveries; past this a message that keeps killing its consumer is
# dead-lettered instead of looping forever. Set explicitly: the default differs between 3.x and 4.x.
DELIVERY_LIMIT = 10


@dataclass(frozen=True)
class WorkQueue:
    name: str  # logical name, e.g. "router.leads"; the broker name adds the namespace
    exchange: str  # "inbound" or "events"
    bindings: tuple[str, ...]


WORK_QUEUES: dict[str, WorkQueue] = {
    q.name: q
    for q in (
        WorkQueue("router.leads", "inbound", ("lead.#",)),
        WorkQueue("router.delivery-results", "events", ("delivery.succeeded", "delivery.failed")),
        WorkQueue("router.reroutes", "events", ("router.reroute",)),
        WorkQueue("delivery.requests", "events", ("delivery.requested",)),
        WorkQueue("delivery.confirm-price", "events", ("delivery.confirm-price",)),
        WorkQueue("returns.commands", "events", ("return.request", "return.decide", "order.command")),
        WorkQueue("portal_auth.rpc", "events", ("portal_auth.#",)),
        WorkQueue(
            "notifier.requests", "events", ("notify.#", "appointment.#", "lead.sold", "lead.assigned", "return.decided")
        ),
    )
}


def owner(logical: str) -> str:
    """The service that consumes a work queue: its logical name's first word."""
    return logical.split(".", 1)[0]


class TopologyMissing(Exception):
    """Queues or exchanges a service needs do not exist: the privileged set-up has not run."""


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


# Delivery retries wait in one of these TTL queues (seconds); an account's retry delay is rounded
# up to the next tier. One queue per delay avoids the head-of-line blocking of per-message TTLs.
DELAY_TIERS = (1, 5, 15, 30, 60, 300, 900, 3600)
DELAYED_QUEUES = ("delivery.requests",)


# Seconds a connection of its own (the passive check, teardown) may take to open.
CONNECT_TIMEOUT = 30.0

# Seconds to wait before each new attempt at one declaration; after the last, the error stands.
DECLARE_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
# Refusals that pass: a quorum queue declared by several processes at once can be refused with
# 404 "home node ... of durable queue ... is down or inaccessible" while its Raft members start (it
# killed a process once when five services started together on a fresh namespace); the broker then
# closes the channel, which reopens by itself (ChannelInvalidStateError meanwhile). A broker
# restarting refuses connections. A 406 (a queue that exists with other arguments) or a 403 does
# not pass: those fail at once.
TRANSIENT_DECLARE_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelNotFoundEntity,
    aio_pika.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPConnectionError,
    ConnectionError,
    TimeoutError,
)


async def declare_with_retries(
    what: str,
    declare: Callable[[], Awaitable[T]],
    backoff: tuple[float, ...] = DECLARE_BACKOFF,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run one declaration, again after each delay of `backoff` while the broker refuses it
    transiently (a non-passive declaration never meets a real 404: the queue is being created)."""
    for delay in backoff:
        try:
            return await declare()
        except TRANSIENT_DECLARE_ERRORS as exc:
            log.warning("declaring %s: %s: %s; again in %gs", what, type(exc).__name__, exc, delay)
            await sleep(delay)
    return await declare()


class Topology:
    def __init__(self, namespace: str, retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)) -> None:
        self.namespace = namespace
        self.retry_delays = tuple(retry_delays)
        self.exchanges = {
            "inbound": RabbitExchange(f"{namespace}.inbound", type=ExchangeType.TOPIC, durable=True),
            "events": RabbitExchange(f"{namespace}.events", type=ExchangeType.TOPIC, durable=True),
        }

    @property
    def inbound(self) -> RabbitExchange:
        return self.exchanges["inbound"]

    @property
    def events(self) -> RabbitExchange:
        return self.exchanges["events"]

    def queue_name(self, logical: str) -> str:
        return f"{self.namespace}.{logical}"

    def dlq_name(self, logical: str) -> str:
        return f"{self.queue_name(logical)}.dlq"

    def retry_name(self, logical: str, tier: int) -> str:
        # Named by delay, not tier number: changing the tiers declares new queues instead of
        # failing on a queue that exists with another TTL. The `.q` marks the quorum wait queues;
        # the classic ones of earlier versions (same name without it) are left alone.
        return f"{self.queue_name(logical)}.retry.{self.retry_delays[tier]:g}s.q"

    def delay_name(self, logical: str, seconds: float) -> str:
        tier = next((t for t in DELAY_TIERS if t >= seconds), DELAY_TIERS[-1])
        return f"{self.queue_name(logical)}.delay.{tier}s.q"

    def queue(self, logical: str, *, declare: bool = True) -> RabbitQueue:
        """The RabbitQueue a subscriber consumes; identical arguments on every declaration.
        `declare=False`: the subscriber only checks that it exists (a passive declaration) and
        binds nothing (LEADWIRE_TOPOLOGY=own)."""
        spec = WORK_QUEUES[logical]
        return RabbitQueue(
            self.queue_name(logical),
            declare=declare,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=spec.bindings[0],
            arguments={
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.dlq_name(logical),
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": DELIVERY_LIMIT,
            },
        )

    def exchange_for(self, logical: str) -> RabbitExchange:
        return self.exchanges[WORK_QUEUES[logical].exchange]

    def is_bound(self, exchange: str, routing_key: str) -> bool:
        """True when some work queue's binding on `exchange` matches `routing_key`."""
        return any(
            spec.exchange == exchange and topic_matches(pattern, routing_key)
            for spec in WORK_QUEUES.values()
            for pattern in spec.bindings
        )

    def queue_names_of(self, logical: str) -> list[str]:
        """A work queue's broker names: itself, its DLQ, its retry (and delay) queues."""
        names = [self.queue_name(logical), self.dlq_name(logical)]
        names.extend(self.retry_name(logical, t) for t in range(len(self.retry_delays)))
        if logical in DELAYED_QUEUES:
            names.extend(self.delay_name(logical, t) for t in DELAY_TIERS)
        return names

    def all_queue_names(self) -> list[str]:
        return [name for logical in WORK_QUEUES for name in self.queue_names_of(logical)]

    async def declare(self, broker: RabbitBroker) -> None:
        exchanges = {}
        for key, exchange in self.exchanges.items():
            exchanges[key] = await declare_with_retries(exchange.name, partial(broker.declare_exchange, exchange))
        for logical, spec in WORK_QUEUES.items():
            await self._declare_queue(broker, RabbitQueue(self.dlq_name(logical), durable=True))
            waits = [(self.retry_name(logical, tier), delay) for tier, delay in enumerate(self.retry_delays)]
            if logical in DELAYED_QUEUES:
                waits += [(self.delay_name(logical, t), t) for t in DELAY_TIERS]
            for name, delay in waits:
                # Quorum with at-least-once dead-lettering: a classic queue drops a message whose
                # TTL expires while the work queue is unavailable (a broker restart), which lost
                # parked deliveries in the fault run. Quorum queues keep it until the work queue
                # confirms it.
                await self._declare_queue(
                    broker,
                    RabbitQueue(
                        name,
                        queue_type=QueueType.QUORUM,
                        durable=True,
                        arguments={
                            "x-message-ttl": int(delay * 1000),
                            "x-dead-letter-exchange": "",
                            "x-dead-letter-routing-key": self.queue_name(logical),
                            "x-dead-letter-strategy": "at-least-once",
                            "x-overflow": "reject-publish",
                        },
                    ),
                )
            queue = await self._declare_queue(broker, self.queue(logical))
            for key in spec.bindings:
                bind = partial(queue.bind, exchanges[spec.exchange], routing_key=key)
                await declare_with_retries(f"{self.queue_name(logical)} <- {key}", bind)

    @staticmethod
    async def _declare_queue(broker: RabbitBroker, queue: RabbitQueue) -> aio_pika.abc.AbstractRobustQueue:
        return await declare_with_retries(queue.name, partial(broker.declare_queue, queue))

    async def check(self, amqp_url: str, backoff: tuple[float, ...] = DECLARE_BACKOFF) -> None:
        """Wait until the whole topology exists, checked with passive declarations (which need no
        permission): a service fenced to its own queues starts only once the privileged set-up has
        declared every queue, so none of its events can be published before the queue that should
        hold it exists. Raises TopologyMissing, naming what is missing, after `backoff`."""
        missing: list[str] = []
        for delay in (*backoff, None):
            missing = await self._missing(amqp_url)
            if not missing:
                return
            if delay is None:
                break
            log.warning(
                "waiting for the broker set-up: %d missing, e.g. %s; again in %gs", len(missing), missing[0], delay
            )
            await asyncio.sleep(delay)
        raise TopologyMissing(
            f"{len(missing)} exchange(s)/queue(s) of namespace {self.namespace!r} do not exist, e.g. "
            f"{', '.join(missing[:3])}: declare the topology first with a privileged broker user "
            '(`leadwire broker setup`, README "Broker users")'
        )

    async def _missing(self, amqp_url: str) -> list[str]:
        connection = await aio_pika.connect(amqp_url, timeout=CONNECT_TIMEOUT)
        missing = []
        try:
            channel = await connection.channel()
            # A passive declaration of something missing closes its channel: a new one for the next.
            for exchange in self.exchanges.values():
                try:
                    await channel.declare_exchange(exchange.name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    missing.append(exchange.name)
                    channel = await connection.channel()
            for name in self.all_queue_names():
                try:
                    await channel.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    missing.append(name)
                    channel = await connection.channel()
        finally:
            await connection.close()
        return missing

    async def delete(self, amqp_url: str) -> None:
        """Remove every queue and exchange of this namespace (test teardown)."""
        connection = await aio_pika.connect(amqp_url, timeout=CONNECT_TIMEOUT)
        try:
            channel = await connection.channel()
            for name in self.all_queue_names():
                await channel.queue_delete(name)
            for exchange in self.exchanges.values():
                await channel.exchange_delete(exchange.name)
        finally:
            await connection.close()


async def setup(amqp_url: str, namespace: str, retry_delays: tuple[float, ...]) -> None:
    """Declare the whole topology as `amqp_url`'s (privileged) user: `leadwire broker setup`."""
    broker = RabbitBroker(amqp_url, logger=None, timeout=CONNECT_TIMEOUT)
    await broker.connect()
    try:
        await Topology(namespace, retry_delays).declare(broker)
    finally:
        await broker.stop()
