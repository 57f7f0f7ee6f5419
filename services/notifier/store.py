"""notifier SQL: send records and appointments (its own tables), and read-only lookups of portal
users (portal_auth's), leads and deliveries (router's) and returns (the returns service's)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

# --- send records ----------------------------------------------------------------------------------


async def ensure_send_record(
    conn: asyncpg.Connection,
    notification_id: uuid.UUID,
    kind: str,
    recipients: list[str],
    subject: str,
    message_id: str,
) -> None:
    await conn.execute(
        "INSERT INTO notification_sends (notification_id, kind, recipients, subject, message_id, status)"
        " VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT (notification_id) DO NOTHING",
        notification_id,
        kind,
        recipients,
        subject,
        message_id,
    )


async def lock_send_record(conn: asyncpg.Connection, notification_id: uuid.UUID) -> asyncpg.Record | None:
    """Held until commit: a second copy of the same request waits here, then finds it sent."""
    return await conn.fetchrow(
        "SELECT status, attempts FROM notification_sends WHERE notification_id = $1 FOR UPDATE",
        notification_id,
    )


async def mark_sent(conn: asyncpg.Connection, notification_id: uuid.UUID, refused: dict[str, str]) -> None:
    await conn.execute(
        "UPDATE notification_sends SET status = 'sent', sent_at = now(), attempts = attempts + 1,"
        " refused = $2, last_error = NULL WHERE notification_id = $1",
        notification_id,
        refused or None,
    )


async def mark_skipped(conn: asyncpg.Connection, notification_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE notification_sends SET status = 'skipped', last_error = $2 WHERE notification_id = $1",
        notification_id,
        reason,
    )


async def note_failure(conn: asyncpg.Connection, notification_id: uuid.UUID, error: str) -> None:
    await conn.execute(
        "UPDATE notification_sends SET attempts = attempts + 1, last_error = $2"
        " WHERE notification_id = $1 AND status = 'pending'",
        notification_id,
        error,
    )


# --- other services' tables, read only ------------------------------------------------------------


async def portal_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, client_id, email, name, enabled FROM portal_users WHERE id = $1",
        user_id,
    )


async def new_lead_subscribers(conn: asyncpg.Connection, client_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, email, name, is_admin, view_downline FROM portal_users"
        " WHERE client_id = $1 AND enabled AND notify_new_leads ORDER BY created_at, id",
        client_id,
    )


async def any_new_lead_subscribers(
    conn: asyncpg.Connection | asyncpg.Pool, client_ids: list[str], *, admins_only: bool = False
) -> bool:
    return bool(client_ids) and bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM portal_users WHERE client_id = ANY($1::text[]) AND enabled"
            " AND notify_new_leads AND (is_admin OR NOT $2))",
            client_ids,
            admins_only,
        )
    )


async def client_users(conn: asyncpg.Connection, client_id: str) -> list[asyncpg.Record]:
    """The client's enabled portal users (whatever their notification settings)."""
    return await conn.fetch(
        "SELECT id, email, name, is_admin FROM portal_users WHERE client_id = $1 AND enabled ORDER BY created_at, id",
        client_id,
    )


async def return_request(conn: asyncpg.Connection, return_id: uuid.UUID, client_id: str) -> asyncpg.Record | None:
    """The return (the returns service's table, read only): who asked, and why."""
    return await conn.fetchrow(
        "SELECT requested_by, reason FROM returns WHERE id = $1 AND client_id = $2",
        return_id,
        client_id,
    )


async def chain_above(conn: asyncpg.Connection, user_id: uuid.UUID, client_id: str) -> list[uuid.UUID]:
    """The user's parent, its parent, and so on (the same client only; a cycle ends the walk)."""
    rows = await conn.fetch(
        "WITH RECURSIVE up (id, parent_user_id) AS ("
        "  SELECT id, parent_user_id FROM portal_users WHERE id = $1 AND client_id = $2"
        "  UNION"
        "  SELECT p.id, p.parent_user_id FROM portal_users p JOIN up ON p.id = up.parent_user_id"
        "  WHERE p.client_id = $2)"
        " SELECT id FROM up WHERE id <> $1",
        user_id,
        client_id,
    )
    return [r["id"] for r in rows]


async def lead(conn: asyncpg.Connection, lead_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, lead_type_id, fields FROM leads WHERE id = $1", lead_id)


async def lead_delivered_to(conn: asyncpg.Connection, lead_id: uuid.UUID, client_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE lead_id = $1 AND client_id = $2 AND status = 'succeeded')",
            lead_id,
            client_id,
        )
    )


# --- appointments ----------------------------------------------------------------------------------

APPOINTMENT_COLUMNS = (
    "id, client_id, lead_id, assigned_user_id, created_by_user_id, title, notes, starts_at, reminder_minutes,"
    " status, reminder_due_at, reminder_queued_at, reminder_late, reminder_revision, last_requested_at"
)


async def insert_appointment(
    conn: asyncpg.Connection,
    *,
    appointment_id: uuid.UUID,
    client_id: str,
    lead_id: uuid.UUID,
    assigned_user_id: uuid.UUID,
    created_by_user_id: uuid.UUID | None,
    title: str,
    notes: str,
    starts_at: datetime,
    reminder_minutes: int,
    reminder_due_at: datetime | None,
    requested_at: datetime,
) -> bool:
    """False when this appointment exists already: its id is the create command's inbox."""
    return bool(
        await conn.fetchval(
            "INSERT INTO appointments (id, client_id, lead_id, assigned_user_id, created_by_user_id, title, notes,"
            " starts_at, reminder_minutes, status, reminder_due_at, last_requested_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'scheduled', $10, $11)"
            " ON CONFLICT (id) DO NOTHING RETURNING true",
            appointment_id,
            client_id,
            lead_id,
            assigned_user_id,
            created_by_user_id,
            title,
            notes,
            starts_at,
            reminder_minutes,
            reminder_due_at,
            requested_at,
        )
    )


async def lock_appointment(conn: asyncpg.Connection, appointment_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1 FOR UPDATE",
        appointment_id,
    )


async def update_appointment(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    *,
    assigned_user_id: uuid.UUID,
    title: str,
    notes: str,
    starts_at: datetime,
    reminder_minutes: int,
    reminder_due_at: datetime | None,
    reminder_queued: bool,
    reminder_revision: int,
    requested_at: datetime,
) -> None:
    await conn.execute(
        "UPDATE appointments SET assigned_user_id = $2, title = $3, notes = $4, starts_at = $5,"
        " reminder_minutes = $6, reminder_due_at = $7,"
        " reminder_queued_at = CASE WHEN $8 THEN reminder_queued_at END,"
        " reminder_late = CASE WHEN $8 THEN reminder_late END,"
        " reminder_revision = $9, last_requested_at = $10, updated_at = now() WHERE id = $1",
        appointment_id,
        assigned_user_id,
        title,
        notes,
        starts_at,
        reminder_minutes,
        reminder_due_at,
        reminder_queued,
        reminder_revision,
        requested_at,
    )


async def cancel_appointment(conn: asyncpg.Connection, appointment_id: uuid.UUID, requested_at: datetime) -> None:
    await conn.execute(
        "UPDATE appointments SET status = 'cancelled', last_requested_at = $2, updated_at = now() WHERE id = $1",
        appointment_id,
        requested_at,
    )


async def claim_due_reminders(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Claim reminders that are due, at most once each: rows another scheduler holds are skipped,
    and a claimed row no longer matches `reminder_queued_at IS NULL`. Claimed in the caller's
    transaction, which also queues the emails, so a crash releases the claim with nothing sent."""
    return await conn.fetch(
        "WITH due AS ("
        "  SELECT id FROM appointments"
        "  WHERE status = 'scheduled' AND reminder_queued_at IS NULL AND reminder_due_at IS NOT NULL"
        "    AND reminder_due_at <= $1"
        "  ORDER BY reminder_due_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " UPDATE appointments a SET reminder_queued_at = $1"
        " FROM due WHERE a.id = due.id"
        f" RETURNING {', '.join('a.' + c.strip() for c in APPOINTMENT_COLUMNS.split(','))}",
        now,
        limit,
    )


async def set_reminder_late(conn: asyncpg.Connection, appointment_id: uuid.UUID, late: bool) -> None:
    await conn.execute("UPDATE appointments SET reminder_late = $2 WHERE id = $1", appointment_id, late)


async def reminder_current(conn: asyncpg.Connection, appointment_id: uuid.UUID, revision: int) -> bool:
    """Is this reminder still wanted: not cancelled, not moved since it was queued."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM appointments WHERE id = $1 AND status = 'scheduled'"
            " AND reminder_revision = $2)",
            appointment_id,
            revision,
        )
    )


async def appointments_of(
    conn: asyncpg.Connection, client_id: str, *, user_id: uuid.UUID | None = None, since: datetime | None = None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE client_id = $1"
        " AND ($2::uuid IS NULL OR assigned_user_id = $2) AND ($3::timestamptz IS NULL OR starts_at >= $3)"
        " ORDER BY starts_at",
        client_id,
        user_id,
        since,
    )
    return [dict(r) for r in rows]


async def unsent(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT notification_id, kind, recipients, attempts, last_error, created_at FROM notification_sends"
        " WHERE status = 'pending' ORDER BY created_at LIMIT $1",
        limit,
    )
