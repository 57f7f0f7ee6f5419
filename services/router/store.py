"""Router SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg


async def insert_lead(
    conn: asyncpg.Connection, *, lead_id: uuid.UUID, source_id: str, idempotency_key: str,
    lead_type_id: str, fields: dict[str, Any], force_id: str | None, reply_to: str | None,
    correlation_id: str | None,
) -> bool:
    """Store a new lead in status 'routing'. False when this source already sent this key: the
    (source, idempotency key) unique constraint is router.leads' inbox."""
    inserted = await conn.fetchval(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, force_id, status,"
        " reply_to, correlation_id) VALUES ($1, $2, $3, $4, $5, $6, 'routing', $7, $8)"
        " ON CONFLICT (source_id, idempotency_key) DO NOTHING RETURNING true",
        lead_id, source_id, idempotency_key, lead_type_id, fields, force_id, reply_to, correlation_id,
    )
    return bool(inserted)


async def lock_fingerprint(conn: asyncpg.Connection, fingerprint: str) -> None:
    """Serialise leads with the same fingerprint across every router replica until commit, so two
    identical leads arriving together cannot both be the original."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", fingerprint)


async def find_original(
    conn: asyncpg.Connection, lead_type_id: str, fingerprint: str, since: datetime, exclude: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id FROM leads WHERE lead_type_id = $1 AND fingerprint = $2 AND received_at >= $3"
        " AND id <> $4 AND status <> 'rejected' ORDER BY received_at LIMIT 1",
        lead_type_id, fingerprint, since, exclude,
    )


async def set_lead_routing(conn: asyncpg.Connection, lead_id: uuid.UUID, fields: dict[str, Any],
                           fingerprint: str | None, plan: list[str]) -> None:
    await conn.execute(
        "UPDATE leads SET fields = $2, fingerprint = $3, plan = $4 WHERE id = $1",
        lead_id, fields, fingerprint, plan,
    )


async def decide_lead(
    conn: asyncpg.Connection, lead_id: uuid.UUID, status: str, *, reason: str | None = None,
    errors: list[dict[str, str]] | None = None, original_lead_id: uuid.UUID | None = None,
    fingerprint: str | None = None,
) -> datetime:
    return await conn.fetchval(
        "UPDATE leads SET status = $2, reason = $3, errors = $4, original_lead_id = $5,"
        " fingerprint = coalesce($6, fingerprint), decided_at = now() WHERE id = $1 RETURNING decided_at",
        lead_id, status, reason, errors, original_lead_id, fingerprint,
    )


async def lock_lead(conn: asyncpg.Connection, lead_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, source_id, idempotency_key, lead_type_id, fields, status, plan, reply_to, correlation_id"
        " FROM leads WHERE id = $1 FOR UPDATE",
        lead_id,
    )


async def insert_delivery(conn: asyncpg.Connection, delivery_id: uuid.UUID, lead_id: uuid.UUID,
                          client_id: str, account_id: str, price: Decimal) -> None:
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status)"
        " VALUES ($1, $2, $3, $4, $5, 'requested')",
        delivery_id, lead_id, client_id, account_id, price,
    )


async def deliveries_of(conn: asyncpg.Connection, lead_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, client_id, delivery_account_id, price, status, reason FROM deliveries"
        " WHERE lead_id = $1 ORDER BY created_at",
        lead_id,
    )
