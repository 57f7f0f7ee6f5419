"""Transactional outbox and inbox.

`add_event` / `add_reply` write a message in the caller's transaction; `with_event` writes one in
the same statement as the state change that causes it (a hot path's round trip saved). The relay
publishes it afterwards as a persistent message with publisher confirms and message_id = the outbox row id, then
deletes the row. A crash between commit and publish leaves the row for the next relay (in this or
any other process); a crash between publish and delete re-publishes the same message_id, which
consumers drop through their inbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
from faststream.rabbit import RabbitBroker
from pydantic import BaseModel

from shared import metrics, sql, tracing
from shared.background import every
from shared.sql import Statement, statement
from shared.topology import Topology

log = logging.getLogger("leadwire.outbox")

NOTIFY_CHANNEL = "leadwire_outbox"


# The process's relay, named in its outbox NOTIFYs so that only it wakes at once (the others'
# polls still publish a row whose process died); empty in a process without a relay (a CLI
# command), whose NOTIFYs wake every relay. Set by OutboxRelay: one relay per process.
# Why targeted wake-ups: docs/benchmark.md, "Optimisations".
_local_relay = ""


# Set by the consumer middleware around a handler of a process that runs a relay: rows written
# inside it are inserted without a NOTIFY, and the middleware wakes its own relay when the handler
# returns (its transaction has committed by then). PostgreSQL serialises notifying commits
# cluster-wide (docs/benchmark.md, third round). Rows written outside a handler (a CLI command, a
# scheduler loop) still notify.
_handler_writes: ContextVar[list[str] | None] = ContextVar("leadwire_outbox_handler_writes", default=None)


def handler_scope() -> list[str]:
    """Start collecting the routing keys of outbox rows this handler writes; the caller wakes its
    relay afterwards if the list is not empty."""
    written: list[str] = []
    _handler_writes.set(written)
    return written


def _relay_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _payload(message: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(message, BaseModel):
        return message.model_dump(mode="json")
    return message


def _notify_payload(routing_key: str) -> str | None:
    """The NOTIFY payload to send with a new outbox row, or None when the handler's own relay will
    be woken for it instead (the row is recorded in the handler's scope)."""
    written = _handler_writes.get()
    if written is not None:
        written.append(routing_key)
        return None
    return _local_relay


@dataclass(frozen=True)
class Event:
    """A message to publish once the transaction that writes it commits: one outbox row."""

    message_id: uuid.UUID
    exchange: str  # "events", "inbound", or "" for a queue named by the routing key
    routing_key: str
    payload: dict[str, Any]
    headers: dict[str, Any]
    notify: str | None  # the NOTIFY payload; None when the handler's own relay is woken instead


def event(
    routing_key: str,
    message: BaseModel | dict[str, Any],
    *,
    exchange: str = "events",
    headers: dict[str, Any] | None = None,
    message_id: uuid.UUID | None = None,
) -> Event:
    """An event to write with `with_event` (or `add_event`). Within a handler this enrols the row
    with the handler's relay (a wake-up for nothing if the statement then writes no row)."""
    headers = dict(headers) if headers else {}
    tracing.inject(headers)  # the relay publishes it in this trace (shared/tracing.py)
    return Event(
        message_id or uuid.uuid4(),
        exchange,
        routing_key,
        _payload(message),
        headers,
        _notify_payload(routing_key),
    )


def with_event(ctes: str | Statement, message: Event, *, source: str, select: str = "") -> Statement:
    """THE way to write an event: one statement holding a state change and the event it causes,

        WITH <ctes>, event AS (one outbox row per row of the CTE <source>) SELECT [<select>,] notified

    so that the two commit together without a BEGIN/COMMIT round trip each way, and the event is
    written only when `source` returns a row (the state change happened). `notified` counts the
    NOTIFYs sent (outside a handler; inside one the handler's relay is woken instead).
    `add_event` is its single-row case."""
    if isinstance(ctes, str):
        ctes = statement(ctes)
    return statement(
        "WITH :ctes, event AS (INSERT INTO outbox (id, exchange, routing_key, payload, headers)"
        " SELECT :event_id::uuid, :event_exchange::text, :event_key::text, :event_payload::jsonb,"
        " :event_headers::jsonb FROM " + source + " RETURNING id)"
        " SELECT " + (select + ", " if select else "") + "(SELECT count(pg_notify(:notify_channel,"
        " :notify_payload::text)) FROM event WHERE :notify_payload::text IS NOT NULL) AS notified",
        ctes=ctes,
        event_id=message.message_id,
        event_exchange=message.exchange,
        event_key=message.routing_key,
        event_payload=message.payload,
        event_headers=message.headers,
        notify_channel=NOTIFY_CHANNEL,
        notify_payload=message.notify,
    )


async def add_event(
    conn: asyncpg.Connection,
    routing_key: str,
    message: BaseModel | dict[str, Any],
    *,
    exchange: str = "events",
    headers: dict[str, Any] | None = None,
    message_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Queue `message` for publishing when the surrounding transaction commits (`with_event` with
    no state change of its own: one round trip per event)."""
    written = event(routing_key, message, exchange=exchange, headers=headers, message_id=message_id)
    await sql.execute(conn, with_event("one AS (SELECT 1)", written, source="one"))
    return written.message_id


async def add_reply(
    conn: asyncpg.Connection, reply_to: str, correlation_id: str | None, message: BaseModel | dict[str, Any]
) -> uuid.UUID:
    """Queue a reply to a requester's reply-to queue (default exchange, routing key = queue)."""
    reply_id = uuid.uuid4()
    await sql.execute(
        conn,
        statement(
            "WITH reply AS (INSERT INTO outbox (id, exchange, routing_key, payload, correlation_id, is_reply)"
            " VALUES (:id, '', :reply_to, :payload, :correlation_id, true) RETURNING id)"
            " SELECT pg_notify(:notify_channel, :notify_payload) FROM reply WHERE :notify_payload::text IS NOT NULL",
            id=reply_id,
            reply_to=reply_to,
            payload=_payload(message),
            correlation_id=correlation_id,
            notify_channel=NOTIFY_CHANNEL,
            notify_payload=_notify_payload(reply_to),
        ),
    )
    return reply_id


async def add_delayed(
    conn: asyncpg.Connection, queue: str, message: BaseModel | dict[str, Any], *, headers: dict[str, Any] | None = None
) -> uuid.UUID:
    """Queue `message` for one of the topology's delay queues (full broker name)."""
    return await add_event(conn, queue, message, exchange="", headers=headers)


@dataclass(frozen=True)
class Reply:
    """A reply to write with `add_many` (`add_reply`'s row)."""

    reply_to: str
    correlation_id: str | None
    message: BaseModel | dict[str, Any]


async def add_many(conn: asyncpg.Connection, messages: list[Event | Reply]) -> None:
    """`add_event` and `add_reply` for many messages (a batch's outcomes), in one round trip."""
    if not messages:
        return
    ids: list[uuid.UUID] = []
    exchanges: list[str] = []
    keys: list[str] = []
    payloads: list[str] = []
    headers: list[str] = []
    correlation_ids: list[str | None] = []
    replies: list[bool] = []
    notify: str | None = None
    for m in messages:
        if isinstance(m, Event):
            ids.append(m.message_id)
            exchanges.append(m.exchange)
            keys.append(m.routing_key)
            payloads.append(json.dumps(m.payload))
            headers.append(json.dumps(m.headers))
            correlation_ids.append(None)
            replies.append(False)
            notify = notify if m.notify is None else m.notify
        else:
            ids.append(uuid.uuid4())
            exchanges.append("")
            keys.append(m.reply_to)
            payloads.append(json.dumps(_payload(m.message)))
            headers.append("{}")
            correlation_ids.append(m.correlation_id)
            replies.append(True)
            reply_notify = _notify_payload(m.reply_to)
            notify = notify if reply_notify is None else reply_notify
    await sql.execute(
        conn,
        statement(
            "WITH written AS (INSERT INTO outbox (id, exchange, routing_key, payload, headers, correlation_id,"
            " is_reply) SELECT m.id, m.exchange, m.routing_key, m.payload::jsonb, m.headers::jsonb, m.correlation_id,"
            " m.is_reply FROM unnest(:ids::uuid[], :exchanges::text[], :keys::text[], :payloads::text[],"
            " :headers::text[], :correlation_ids::text[], :replies::bool[]) WITH ORDINALITY"
            " AS m(id, exchange, routing_key, payload, headers, correlation_id, is_reply, n) ORDER BY m.n RETURNING 1)"
            " SELECT pg_notify(:notify_channel, :notify_payload::text)"
            " WHERE :notify_payload::text IS NOT NULL AND EXISTS (SELECT FROM written)",
            ids=ids,
            exchanges=exchanges,
            keys=keys,
            payloads=payloads,
            headers=headers,
            correlation_ids=correlation_ids,
            replies=replies,
            notify_channel=NOTIFY_CHANNEL,
            notify_payload=notify,
        ),
    )


def claim(consumer: str, message_id: str) -> Statement:
    """A CTE `claim` for a statement that claims its message in the inbox along with its first
    read: a row (true) when `consumer` sees `message_id` for the first time. The same row
    `claim_message` writes."""
    return statement(
        "claim AS (INSERT INTO inbox (consumer, message_id) VALUES (:consumer, :message_id)"
        " ON CONFLICT DO NOTHING RETURNING true)",
        consumer=consumer,
        message_id=message_id,
    )


async def claim_message(conn: asyncpg.Connection, consumer: str, message_id: str) -> bool:
    """Inbox: True the first time `consumer` sees `message_id` (in this transaction), else False."""
    return bool(
        await sql.fetchval(conn, statement("WITH :claim SELECT true FROM claim", claim=claim(consumer, message_id)))
    )


class OutboxRelay:
    """Publishes outbox rows. Several relays (one per process) share the table via SKIP LOCKED."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: RabbitBroker,
        topology: Topology,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 200,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._topology = topology
        self._batch_size = batch_size
        self.published = 0
        # Polls for rows a process left behind when it died; a failed round (broker or database
        # away) keeps the rows and tries again one interval later.
        self.loop = every(poll_interval, self.drain, name="outbox relay")
        global _local_relay
        self._tag = _local_relay = _relay_tag()

    def wake(self, writer: str = "") -> None:
        """Relay now: rows were committed by this process (or by one that did not say)."""
        if not writer or writer == self._tag:
            self.loop.wake()

    async def drain(self) -> int:
        """Relay batches until the outbox has no more than one batch's worth left; returns how
        many rows were published."""
        total = 0
        while (relayed := await self.relay_batch()) > 0:
            total += relayed
            if relayed < self._batch_size:
                break
        return total

    async def relay_batch(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            # Taken and deleted in one statement; a failed publish rolls the delete back.
            rows = await conn.fetch(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY created_at LIMIT $1"
                " FOR UPDATE SKIP LOCKED)"
                " RETURNING id, exchange, routing_key, payload, headers, correlation_id, is_reply, created_at",
                self._batch_size,
            )
            if not rows:
                return 0
            # Published in the order written; confirms are awaited together: one round trip per
            # batch, not per message.
            rows = sorted(rows, key=lambda r: r["created_at"])
            await asyncio.gather(*(self._publish(r) for r in rows))
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
        return len(rows)

    async def _publish(self, row: asyncpg.Record) -> None:
        # In the trace of the handler that wrote the row (each row is its own task: gather).
        with tracing.attached(row["headers"]):
            await self._publish_row(row)

    async def _publish_row(self, row: asyncpg.Record) -> None:
        if row["exchange"] == "":
            # Straight to a queue: a requester's reply-to, or one of our delay queues.
            await self._broker.publish(
                row["payload"],
                queue=row["routing_key"],
                correlation_id=row["correlation_id"],
                headers=row["headers"] or None,
                message_id=str(row["id"]),
                persist=True,
                mandatory=not row["is_reply"],
                timeout=10,
            )
            return
        await self._broker.publish(
            row["payload"],
            exchange=self._topology.exchanges[row["exchange"]],
            routing_key=row["routing_key"],
            headers=row["headers"] or None,
            message_id=str(row["id"]),
            persist=True,
            # A command some work queue must hold is published `mandatory`, so an unroutable one
            # fails the batch instead of vanishing; a pure notification may have no listener yet.
            mandatory=self._topology.is_bound(row["exchange"], row["routing_key"]),
            timeout=10,
        )
