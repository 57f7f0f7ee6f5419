"""Delivery SQL: the delivery row's state machine and the delivery log."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg


async def claim(conn: asyncpg.Connection, delivery_id: uuid.UUID, *, reclaim: bool) -> int | None:
    """Move a delivery to 'posting' and count the attempt. Only one consumer can win: a delivery
    already posting is taken over only when `reclaim` (the broker redelivered the message because
    the consumer that held it died). Returns the attempt number, or None when not ours to post."""
    return await conn.fetchval(
        "UPDATE deliveries SET status = 'posting', attempts = attempts + 1"
        " WHERE id = $1 AND (status = 'requested' OR (status = 'posting' AND $2)) RETURNING attempts",
        delivery_id, reclaim,
    )


async def log_attempt(
    conn: asyncpg.Connection, *, delivery_id: uuid.UUID, attempt: int, started_at: datetime, duration_ms: int,
    request: str, status_code: int | None, response: str | None, outcome: str, error: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, request, status_code,"
        " response, outcome, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        delivery_id, attempt, started_at, duration_ms, request, status_code, response, outcome, error,
    )


async def finish(conn: asyncpg.Connection, delivery_id: uuid.UUID, status: str, *, price: Decimal | None = None,
                 reason: str | None = None) -> bool:
    """Close a posting delivery; False when it was not posting (someone else finished it)."""
    done = await conn.fetchval(
        "UPDATE deliveries SET status = $2, price = coalesce($3, price), reason = $4, completed_at = now()"
        " WHERE id = $1 AND status = 'posting' RETURNING true",
        delivery_id, status, price, reason,
    )
    return bool(done)


async def release_for_retry(conn: asyncpg.Connection, delivery_id: uuid.UUID, reason: str) -> bool:
    done = await conn.fetchval(
        "UPDATE deliveries SET status = 'requested', reason = $2 WHERE id = $1 AND status = 'posting' RETURNING true",
        delivery_id, reason,
    )
    return bool(done)
