"""The intake's SQL: its receipts (`intake_posts`), the rate-limit windows, the callbacks, and its
reads of the router's `leads` and delivery's `deliveries` (a posted lead's state, scoped to the
posting source). Keys are checked through shared/api_keys.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from services.intake.rules import LeadState
from shared import sql
from shared.sql import statement

# The lead's columns and its sold deliveries' count and price, joined to a receipt `p`.
_LEAD_COLUMNS = (
    "p.id AS receipt_id, p.lead_type_id AS post_lead_type, l.id AS lead_id, l.status, l.reason, l.errors,"
    " (SELECT count(*) FROM deliveries d WHERE d.lead_id = l.id AND d.status = 'succeeded') AS buyers,"
    " (SELECT coalesce(sum(d.price), 0) FROM deliveries d WHERE d.lead_id = l.id AND d.status = 'succeeded') AS price"
)
_LEAD_JOIN = "LEFT JOIN leads l ON l.source_id = p.source_id AND l.idempotency_key = p.idempotency_key"


def _state(row: asyncpg.Record) -> LeadState:
    return LeadState(
        receipt_id=row["receipt_id"],
        lead_type=row["post_lead_type"],
        lead_id=row["lead_id"],
        status=row["status"],
        reason=row["reason"],
        errors=list(row["errors"] or []),
        price=Decimal(row["price"] or 0),
        buyers=int(row["buyers"] or 0),
    )


@dataclass(frozen=True)
class Recorded:
    state: LeadState
    first: bool  # this request made the receipt (no earlier post with this key)
    conflict: bool  # the earlier post with this key asked for something else (its fingerprint)


async def record_post(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    source_id: str,
    idempotency_key: str,
    lead_type: str,
    key_id: str,
    callback_url: str | None,
    fingerprint: bytes,
) -> Recorded:
    """The receipt of (source, idempotency key) — made now, or the earlier one (a re-send keeps
    the first post's lead type and callback) — with the lead's state if the router has it, and
    whether the earlier post asked for something else. Concurrent posts with one key wait on the
    unique index for the first one's commit: every one of them sees the first's fingerprint."""
    row = await sql.fetchrow(
        conn,
        statement(
            "WITH p AS (INSERT INTO intake_posts"
            " (id, source_id, idempotency_key, lead_type_id, key_id, callback_url, request_sha256)"
            " VALUES (:id, :source_id, :key, :lead_type, :key_id, :callback_url, :fingerprint)"
            " ON CONFLICT (source_id, idempotency_key) DO UPDATE SET source_id = excluded.source_id"
            " RETURNING id, source_id, idempotency_key, lead_type_id, request_sha256, (xmax = 0) AS first)"
            " SELECT p.first, coalesce(p.request_sha256 <> :fingerprint, false) AS conflict,"
            f" {_LEAD_COLUMNS} FROM p {_LEAD_JOIN}",
            id=uuid.uuid4(),
            source_id=source_id,
            key=idempotency_key,
            lead_type=lead_type,
            key_id=key_id,
            callback_url=callback_url,
            fingerprint=fingerprint,
        ),
    )
    assert row is not None
    return Recorded(_state(row), bool(row["first"]), bool(row["conflict"]))


async def lead_state(conn: asyncpg.Connection | asyncpg.Pool, source_id: str, idempotency_key: str) -> LeadState | None:
    row = await sql.fetchrow(
        conn,
        statement(
            f"SELECT {_LEAD_COLUMNS} FROM intake_posts p {_LEAD_JOIN}"
            " WHERE p.source_id = :source_id AND p.idempotency_key = :key",
            source_id=source_id,
            key=idempotency_key,
        ),
    )
    return _state(row) if row is not None else None


async def state_by_id(conn: asyncpg.Connection | asyncpg.Pool, source_id: str, some_id: uuid.UUID) -> LeadState | None:
    """A lead of this source posted over HTTP, by its lead id or its receipt id; None for anything
    else (another source's lead, a lead posted over AMQP, no such id)."""
    row = await sql.fetchrow(
        conn,
        statement(
            f"SELECT {_LEAD_COLUMNS} FROM intake_posts p {_LEAD_JOIN}"
            " WHERE p.source_id = :source_id AND (p.id = :id OR l.id = :id) LIMIT 1",
            source_id=source_id,
            id=some_id,
        ),
    )
    return _state(row) if row is not None else None


# --- rate limits ------------------------------------------------------------------------------------


async def hit(conn: asyncpg.Connection | asyncpg.Pool, bucket: str) -> tuple[int, float]:
    """Count one request of `bucket` in the current one-second window (the database's clock, so
    every replica shares it); returns (requests in this window, seconds until it ends)."""
    row = await sql.fetchrow(
        conn,
        statement(
            "WITH w AS (SELECT date_trunc('second', clock_timestamp()) AS start)"
            " INSERT INTO intake_rate_windows AS r (key_id, window_start, hits) SELECT :bucket, w.start, 1 FROM w"
            " ON CONFLICT (key_id, window_start) DO UPDATE SET hits = r.hits + 1"
            " RETURNING hits, extract(epoch FROM (window_start + interval '1 second' - clock_timestamp())) AS left",
            bucket=bucket,
        ),
    )
    assert row is not None
    return int(row["hits"]), max(0.0, float(row["left"]))


async def prune_windows(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    done = await sql.execute(
        conn, statement("DELETE FROM intake_rate_windows WHERE window_start < now() - interval '10 seconds'")
    )
    return int(done.split()[-1])


# --- callbacks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueCallback:
    receipt_id: uuid.UUID
    url: str
    attempts: int
    state: LeadState
    key_id: str  # the key that posted: its secret signs the callback
    secret: str | None


async def claim_callbacks(
    conn: asyncpg.Connection | asyncpg.Pool, *, limit: int, lease_seconds: float, max_attempts: int
) -> list[DueCallback]:
    """Callbacks whose lead is decided and that are due, claimed (attempt counted, next try pushed
    `lease_seconds` ahead) so that no other replica calls them meanwhile."""
    rows = await sql.fetch(
        conn,
        statement(
            "WITH due AS (SELECT p.id FROM intake_posts p JOIN leads l ON l.source_id = p.source_id"
            " AND l.idempotency_key = p.idempotency_key"
            " WHERE p.callback_url IS NOT NULL AND p.callback_done_at IS NULL AND l.status <> 'routing'"
            " AND p.callback_attempts < :max_attempts"
            " AND (p.callback_not_before IS NULL OR p.callback_not_before <= now())"
            " ORDER BY p.created_at LIMIT :limit FOR UPDATE OF p SKIP LOCKED),"
            " p AS (UPDATE intake_posts p SET callback_attempts = p.callback_attempts + 1,"
            " callback_not_before = now() + make_interval(secs => :lease) FROM due WHERE p.id = due.id"
            " RETURNING p.*)"
            " SELECT p.callback_url, p.callback_attempts, p.key_id,"
            " (SELECT k.callback_secret FROM source_api_keys k WHERE k.key_id = p.key_id) AS callback_secret,"
            f" {_LEAD_COLUMNS} FROM p {_LEAD_JOIN}",
            max_attempts=max_attempts,
            limit=limit,
            lease=lease_seconds,
        ),
    )
    return [
        DueCallback(
            r["receipt_id"], r["callback_url"], r["callback_attempts"], _state(r), r["key_id"], r["callback_secret"]
        )
        for r in rows
    ]


async def finish_callback(
    conn: asyncpg.Connection | asyncpg.Pool, receipt_id: uuid.UUID, *, done: bool, result: str, retry_in: float
) -> None:
    await sql.execute(
        conn,
        statement(
            "UPDATE intake_posts SET callback_result = :result,"
            " callback_done_at = CASE WHEN :done THEN now() ELSE NULL END,"
            " callback_not_before = CASE WHEN :done THEN callback_not_before"
            " ELSE now() + make_interval(secs => :retry_in) END WHERE id = :id",
            id=receipt_id,
            done=done,
            result=result[:500],
            retry_in=retry_in,
        ),
    )


async def paused_accounts(conn: asyncpg.Connection | asyncpg.Pool) -> frozenset[str]:
    """Delivery accounts auto-paused by delivery (read, for test mode's plan)."""
    rows = await sql.fetch(conn, statement("SELECT delivery_account_id FROM delivery_account_state WHERE paused"))
    return frozenset(r["delivery_account_id"] for r in rows)
