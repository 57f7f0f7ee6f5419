"""Dead letters: what sits in each queue's DLQ and in the `dead_letters` table, replay and purge.

Replay of one dead letter (`replay`), under a per-queue advisory lock so two replays of one queue
never hide each other's DLQ copies:
1. the row, locked; refused when already replayed or purged;
2. its DLQ copy, found by message id (basic.get without ack; the others go back with nack+requeue);
3. republished to its work queue through the default exchange with the same message id, content
   type, correlation id and reply-to, its headers minus the failure ones (x-error*, x-dead-lettered-*,
   x-retry-count, x-last-error) plus x-replayed-at / x-replayed-by, persistent, mandatory, with a
   publisher confirm — from the DLQ copy byte for byte, or from the row when the copy is gone;
4. the DLQ copy acked, the row marked replayed and the audit row written, in one transaction.
A crash between 3 and 4 leaves the row open: replaying again republishes the same message id,
which every consumer's inbox (or domain key) turns into a no-op.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared import sql
from shared.sql import statement
from shared.topology import WORK_QUEUES, Topology

# The DLQ scan stops after this many messages (a copy further back is replayed from its row).
SCAN_LIMIT = 5000
# Headers the failure routing added that a replayed message must not carry.
DROPPED_HEADERS = (
    "x-error",
    "x-error-type",
    "x-dead-lettered-at",
    "x-dead-lettered-by",
    "x-retry-count",
    "x-last-error",
)
# The table keeps at most this much of a body (shared/service.py).
ROW_BODY_LIMIT = 65536


@dataclass(frozen=True)
class QueueFigures:
    logical: str
    name: str
    depth: int | None  # messages ready in the work queue (None: the queue does not exist)
    consumers: int | None
    dlq_depth: int | None
    open_rows: int
    last_error: str | None
    last_at: datetime | None


@asynccontextmanager
async def broker(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


async def confirming(connection: aio_pika.abc.AbstractConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def _counts(ch: AbstractChannel, name: str) -> tuple[int | None, int | None]:
    try:
        queue = await ch.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return None, None
    result = queue.declaration_result
    return result.message_count, result.consumer_count


async def figures(pool: asyncpg.Pool, amqp_url: str, topology: Topology) -> list[QueueFigures]:
    """Per work queue: depth and consumers, DLQ depth, open dead-letter rows and the latest error."""
    rows = {
        r["queue"]: r
        for r in await sql.fetch(
            pool,
            statement(
                "SELECT DISTINCT ON (queue) queue, error, created_at,"
                " count(*) OVER (PARTITION BY queue) AS open_rows"
                " FROM dead_letters WHERE resolution IS NULL ORDER BY queue, id DESC"
            ),
        )
    }
    out = []
    connection = await aio_pika.connect(amqp_url)
    try:
        for logical in WORK_QUEUES:
            name = topology.queue_name(logical)
            ch = await connection.channel()
            depth, consumers = await _counts(ch, name)
            if ch.is_closed:
                ch = await connection.channel()
            dlq_depth, _ = await _counts(ch, topology.dlq_name(logical))
            if not ch.is_closed:
                await ch.close()
            row = rows.get(name)
            out.append(
                QueueFigures(
                    logical,
                    name,
                    depth,
                    consumers,
                    dlq_depth,
                    int(row["open_rows"]) if row else 0,
                    row["error"] if row else None,
                    row["created_at"] if row else None,
                )
            )
    finally:
        await connection.close()
    return out


async def open_rows(pool: asyncpg.Pool, queue: str | None, limit: int = 200) -> list[asyncpg.Record]:
    return await sql.fetch(
        pool,
        statement(
            "SELECT id, queue, message_id, error, body, headers, created_at, resolution, resolved_at, resolved_by"
            " FROM dead_letters WHERE resolution IS NULL AND (CAST(:queue AS text) IS NULL OR queue = :queue)"
            " ORDER BY id DESC LIMIT :limit",
            queue=queue,
            limit=limit,
        ),
    )


async def open_ids(pool: asyncpg.Pool, queue: str, limit: int) -> list[int]:
    """The open dead letters of one queue, oldest first (a bulk replay keeps their order)."""
    rows = await sql.fetch(
        pool,
        statement(
            "SELECT id FROM dead_letters WHERE resolution IS NULL AND queue = :queue ORDER BY id LIMIT :limit",
            queue=queue,
            limit=limit,
        ),
    )
    return [r["id"] for r in rows]


def preview(body: bytes | None, limit: int = 300) -> str:
    if body is None:
        return ""
    text = bytes(body[:limit]).decode("utf-8", "replace")
    return text + ("…" if len(body) > limit else "")


def replay_headers(headers: dict[str, Any], who: str, now: datetime) -> dict[str, Any]:
    kept = {k: v for k, v in headers.items() if k not in DROPPED_HEADERS}
    kept["x-replayed-at"] = now.isoformat()
    kept["x-replayed-by"] = who
    return kept


class ReplayRefused(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


async def _take_copy(ch: AbstractChannel, dlq: str, message_id: str | None) -> AbstractIncomingMessage | None:
    """The DLQ message with `message_id`, left unacked for the caller; every other message taken
    on the way goes back to the queue."""
    if message_id is None:
        return None
    try:
        queue = await ch.declare_queue(dlq, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return None
    held: list[AbstractIncomingMessage] = []
    found = None
    try:
        for _ in range(min(queue.declaration_result.message_count or 0, SCAN_LIMIT)):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if message.message_id == message_id:
                found = message
                break
            held.append(message)
    finally:
        for message in held:
            await message.nack(requeue=True)
    return found


def full_queue_known(queue: str, topology: Topology) -> bool:
    return any(topology.queue_name(logical) == queue for logical in WORK_QUEUES)


async def resolve(conn: asyncpg.Connection, dead_letter_id: int, resolution: str, who: str, now: datetime) -> None:
    await sql.execute(
        conn,
        statement(
            "UPDATE dead_letters SET resolution = :r, resolved_at = :now, resolved_by = :who WHERE id = :id",
            id=dead_letter_id,
            r=resolution,
            now=now,
            who=who,
        ),
    )


async def lock_row(conn: asyncpg.Connection, dead_letter_id: int) -> asyncpg.Record:
    row = await sql.fetchrow(
        conn,
        statement(
            "SELECT id, queue, message_id, body, headers, resolution FROM dead_letters WHERE id = :id FOR UPDATE",
            id=dead_letter_id,
        ),
    )
    if row is None:
        raise ReplayRefused(f"There is no dead letter {dead_letter_id}.", 404)
    if row["resolution"] is not None:
        raise ReplayRefused(f"Dead letter {dead_letter_id} was {row['resolution']} already.")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"dlq:{row['queue']}")
    return row


async def replay(conn: asyncpg.Connection, amqp_url: str, dead_letter_id: int, who: str) -> str:
    """Replay one dead letter (see the module's docstring); call inside a transaction, which the
    caller commits with its audit row. Returns where the body came from: "dlq" or "table"."""
    row = await lock_row(conn, dead_letter_id)
    now = datetime.now(UTC)
    async with broker(amqp_url) as connection:
        ch = await confirming(connection)
        copy = await _take_copy(ch, f"{row['queue']}.dlq", row["message_id"])
        if ch.is_closed:  # no DLQ at all (a passive declare closes the channel)
            ch = await confirming(connection)
        if copy is not None:
            body, headers = copy.body, dict(copy.headers or {})
            content_type, correlation_id, reply_to = copy.content_type, copy.correlation_id, copy.reply_to
        else:
            if row["body"] is None or len(row["body"]) >= ROW_BODY_LIMIT:
                raise ReplayRefused(
                    "Its DLQ copy is gone and the table keeps only the first 64 KiB of its body: not replayed."
                )
            body, headers = bytes(row["body"]), dict(row["headers"] or {})
            content_type, correlation_id, reply_to = "application/json", None, None
        message = aio_pika.Message(
            body,
            headers=replay_headers(headers, who, now),
            content_type=content_type,
            correlation_id=correlation_id,
            reply_to=reply_to,
            message_id=row["message_id"],
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await ch.default_exchange.publish(message, routing_key=row["queue"], mandatory=True, timeout=10)
        if copy is not None:
            await copy.ack()
    await resolve(conn, dead_letter_id, "replayed", who, now)
    return "dlq" if copy is not None else "table"


async def purge(conn: asyncpg.Connection, amqp_url: str, dead_letter_id: int, who: str) -> bool:
    """Throw one dead letter away: its DLQ copy (if still there) and the row marked purged.
    Returns whether a DLQ copy was removed."""
    row = await lock_row(conn, dead_letter_id)
    async with broker(amqp_url) as connection:
        copy = await _take_copy(await confirming(connection), f"{row['queue']}.dlq", row["message_id"])
        if copy is not None:
            await copy.ack()
    await resolve(conn, dead_letter_id, "purged", who, datetime.now(UTC))
    return copy is not None


def describe_headers(headers: Any) -> str:
    return json.dumps(headers or {}, indent=1, sort_keys=True)
