"""Router SQL."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.router.rules import Attempt
from shared.orders import sale_lookup
from shared.outbox import claim_in_statement, event_in_statement


async def insert_lead(
    conn: asyncpg.Connection,
    *,
    lead_id: uuid.UUID,
    source_id: str,
    idempotency_key: str,
    lead_type_id: str,
    fields: dict[str, Any],
    force_id: str | None,
    reply_to: str | None,
    correlation_id: str | None,
    status: str,
    reason: str | None = None,
    errors: list[dict[str, str]] | None = None,
    fingerprint: str | None = None,
    plan: list[dict[str, Any]] | None = None,
    max_sales: int = 1,
    excluded_clients: list[str] | None = None,
    original_lead_id: uuid.UUID | None = None,
) -> bool:
    """Store a new lead as decided ('rejected', 'duplicate', 'unsold') or being routed ('routing',
    with its plan). False when this source already sent this key: the (source, idempotency key)
    unique constraint is router.leads' inbox."""
    inserted = await conn.fetchval(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, force_id, status, reply_to,"
        " correlation_id, reason, errors, fingerprint, plan, max_sales, excluded_clients, original_lead_id,"
        " decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
        " CASE WHEN $7 = 'routing' THEN NULL ELSE now() END)"
        " ON CONFLICT (source_id, idempotency_key) DO NOTHING RETURNING true",
        lead_id,
        source_id,
        idempotency_key,
        lead_type_id,
        fields,
        force_id,
        status,
        reply_to,
        correlation_id,
        reason,
        errors,
        fingerprint,
        plan or [],
        max_sales,
        excluded_clients or [],
        original_lead_id,
    )
    return bool(inserted)


async def lock_fingerprint(conn: asyncpg.Connection, fingerprint: str) -> None:
    """Serialise leads with the same fingerprint across every router replica until commit, so two
    identical leads arriving together cannot both be the original."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", fingerprint)


async def find_original(
    conn: asyncpg.Connection, lead_type_id: str, fingerprint: str, since: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id FROM leads WHERE lead_type_id = $1 AND fingerprint = $2 AND received_at >= $3"
        " AND status <> 'rejected' ORDER BY received_at LIMIT 1",
        lead_type_id,
        fingerprint,
        since,
    )


async def clients_with_fingerprint(
    conn: asyncpg.Connection,
    lead_type_id: str,
    fingerprint: str,
    since: datetime,
    other_than: uuid.UUID | None = None,
) -> set[str]:
    """Clients that received (or are being sent) a lead with this fingerprint received since
    `since`, other than lead `other_than`. Read under the fingerprint lock, in a statement of its
    own: one that waited for the lock would read the deliveries as of before the wait."""
    rows = await conn.fetch(
        "SELECT DISTINCT d.client_id FROM leads l JOIN deliveries d ON d.lead_id = l.id"
        " WHERE l.lead_type_id = $1 AND l.fingerprint = $2 AND l.received_at >= $3"
        " AND l.id IS DISTINCT FROM $4 AND d.status IN ('requested', 'posting', 'succeeded')",
        lead_type_id,
        fingerprint,
        since,
        other_than,
    )
    return {r["client_id"] for r in rows}


async def pauses_and_turns(pool: asyncpg.Pool, rotating_groups: list[str]) -> tuple[frozenset[str], dict[str, int]]:
    """The auto-paused accounts, and the next turn of each rotating group, in one round trip.
    Deliberately outside the lead's transaction: a group's counter row is locked for this one
    statement, not for the whole routing decision; groups are taken in name order so two routers
    never wait on each other's rows crosswise."""
    row = await pool.fetchrow(
        "WITH turns AS ("
        " INSERT INTO group_rotation (group_id, counter) SELECT g, 0 FROM unnest($1::text[]) g ORDER BY g"
        " ON CONFLICT (group_id) DO UPDATE SET counter = group_rotation.counter + 1 RETURNING group_id, counter)"
        " SELECT array(SELECT delivery_account_id FROM delivery_account_state WHERE paused) AS paused,"
        " array(SELECT group_id FROM turns) AS groups, array(SELECT counter FROM turns) AS counters",
        sorted(rotating_groups),
    )
    return frozenset(row["paused"]), dict(zip(row["groups"], row["counters"], strict=True))


async def save_skipped(conn: asyncpg.Connection, lead_id: uuid.UUID, skipped: list[str]) -> None:
    await conn.execute("UPDATE leads SET skipped = $2 WHERE id = $1", lead_id, skipped)


async def decide_lead(
    conn: asyncpg.Connection, lead_id: uuid.UUID, status: str, reason: str | None, event: list[Any]
) -> None:
    """The routed lead's outcome, once its deliveries are done, with its `lead.<status>` event
    (`outbox.event_params`) in one round trip."""
    event_cte, notified = event_in_statement("decided", 4)
    await conn.execute(
        "WITH decided AS (UPDATE leads SET status = $2, reason = $3, decided_at = now() WHERE id = $1 RETURNING id),"
        f" {event_cte} SELECT {notified}",
        lead_id,
        status,
        reason,
        *event,
    )


async def claim_and_lock_lead(
    conn: asyncpg.Connection, consumer: str, message_id: str, lead_id: uuid.UUID
) -> tuple[bool, asyncpg.Record | None]:
    """Claim a message in the inbox and, the first time only, lock its lead and, while the lead is
    still routing, its fingerprint: (claimed, lead row or None). One round trip.

    Lock order: the lead row, then the fingerprint (the projection is computed from the locked
    row), then whatever caps and orders the step touches. A lead being received takes only the
    fingerprint, then caps and orders; it never waits on an existing lead's row, so the two orders
    cannot cross. The lead's deliveries, and the other clients holding its person, must be read by
    later statements: one that waited here for a lock would read them as of before the wait."""
    row = await conn.fetchrow(
        f"WITH {claim_in_statement(1)}"
        " SELECT c.claimed, l.*, CASE WHEN l.status = 'routing' AND l.fingerprint IS NOT NULL"
        "  THEN pg_advisory_xact_lock(hashtextextended(l.fingerprint, 0)) END AS fingerprint_locked"
        " FROM (SELECT EXISTS (SELECT FROM claim) AS claimed) c"
        " LEFT JOIN LATERAL (SELECT id, source_id, idempotency_key, lead_type_id, fields, fingerprint, status, plan,"
        "  skipped, max_sales, original_lead_id, reply_to, correlation_id FROM leads WHERE id = $3 AND c.claimed"
        "  FOR UPDATE) l ON true",
        consumer,
        message_id,
        lead_id,
    )
    return row["claimed"], row if row["id"] is not None else None


async def take_caps(
    conn: asyncpg.Connection,
    account_id: str,
    windows: list[tuple[str, datetime, int]],
    sale: tuple[str, date, uuid.UUID],
) -> tuple[list[list[str]] | None, asyncpg.Record | None]:
    """Count one sale in each of an account's cap windows, and read the order lookup of the sale
    (`orders.sale_lookup` for (client, day, delivery id)) in the same round trip. Returns the
    windows as [period, start] keys, or None when one of them is full — then the caller rolls back
    what this statement took (it runs in a savepoint) — and the lookup row (None without windows:
    no statement is made). One statement for every window: each counter is updated under its
    row lock only while below its cap, so concurrent routers can never push a count past it, and
    every router locks an account's windows in the same order."""
    if not windows:
        return [], None
    client_id, day, delivery_id = sale
    row = await conn.fetchrow(
        "WITH w AS (SELECT * FROM unnest($2::text[], $3::timestamp[], $4::int[]) AS w(period, period_start, cap)),"
        " taken AS (INSERT INTO cap_usage (delivery_account_id, period, period_start, used)"
        "  SELECT $1, period, period_start, 1 FROM w"
        "  ON CONFLICT (delivery_account_id, period, period_start) DO UPDATE SET used = cap_usage.used + 1"
        "  WHERE cap_usage.used < (SELECT w.cap FROM w WHERE w.period = excluded.period)"
        "  RETURNING 1)"
        f" SELECT (SELECT count(*) FROM taken) AS taken, {sale_lookup(5, 6, 1, 7)}",
        account_id,
        [p for p, _, _ in windows],
        [s for _, s, _ in windows],
        [c for _, _, c in windows],
        client_id,
        day,
        delivery_id,
    )
    if row["taken"] < len(windows):
        return None, row
    return [[period, start.isoformat()] for period, start, _cap in windows], row


async def release_caps(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    """Give back the cap units a failed delivery held."""
    await conn.execute(
        "UPDATE cap_usage c SET used = c.used - 1"
        " FROM deliveries d, jsonb_array_elements(d.cap_keys) k"
        " WHERE d.id = $1 AND c.delivery_account_id = d.delivery_account_id"
        " AND c.period = k->>0 AND c.period_start = (k->>1)::timestamp AND c.used > 0",
        delivery_id,
    )


async def request_delivery(
    conn: asyncpg.Connection,
    delivery_id: uuid.UUID,
    lead_id: uuid.UUID,
    client_id: str,
    account_id: str,
    price: Decimal,
    group_id: str,
    cap_keys: list[list[str]],
    order_id: str | None,
    event: list[Any],
) -> None:
    """Insert the delivery and its `delivery.requested` event (`outbox.event_params`) in one round trip."""
    event_cte, notified = event_in_statement("delivery", 9)
    await conn.execute(
        "WITH delivery AS (INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status,"
        " group_id, cap_keys, order_id) VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7, $8) RETURNING id),"
        f" {event_cte} SELECT {notified}",
        delivery_id,
        lead_id,
        client_id,
        account_id,
        price,
        group_id,
        cap_keys,
        order_id,
        *event,
    )


async def deliveries_of(conn: asyncpg.Connection, lead_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, client_id, delivery_account_id, price, status, reason, order_id FROM deliveries"
        " WHERE lead_id = $1 ORDER BY created_at, id",
        lead_id,
    )


def as_attempts(rows: list[asyncpg.Record]) -> list[Attempt]:
    return [Attempt(r["delivery_account_id"], r["client_id"], r["status"]) for r in rows]
