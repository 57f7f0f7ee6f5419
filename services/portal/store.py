"""SQL of the Client Portal's own writes (its reads are all in queries.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def lock_user_emails(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Serialise one user's emails about leads (this transaction only): the hourly limit and the
    double-submit check then see every earlier send of that user."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('portal.emails:' || $1::uuid::text, 0))", user_id)


async def emails_sent_since(conn: asyncpg.Connection, user_id: uuid.UUID, since: datetime) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM portal_activity WHERE user_id = $1 AND created_at >= $2", user_id, since
        )
    )


async def activity(conn: asyncpg.Connection, activity_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, client_id, lead_id, user_id, kind FROM portal_activity WHERE id = $1", activity_id
    )


async def record_activity(
    conn: asyncpg.Connection,
    *,
    activity_id: uuid.UUID,
    client_id: str,
    lead_id: uuid.UUID,
    user_id: uuid.UUID,
    kind: str,
    recipients: list[str],
    subject: str,
    now: datetime,
) -> bool:
    """True when recorded now; False when this id was recorded before (a repeated form)."""
    return bool(
        await conn.fetchval(
            "INSERT INTO portal_activity (id, client_id, lead_id, user_id, kind, recipients, subject, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING true",
            activity_id,
            client_id,
            lead_id,
            user_id,
            kind,
            recipients,
            subject,
            now,
        )
    )
