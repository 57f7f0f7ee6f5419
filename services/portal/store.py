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


# --- Lead assignment ---------------------------------------------------------------------------------


async def lock_assignment(conn: asyncpg.Connection, client_id: str, lead_id: uuid.UUID) -> uuid.UUID | None:
    """Serialise writes to one lead's assignment (this transaction only) and read who has it now."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('portal.assign:' || $1 || ':' || $2::uuid::text, 0))",
        client_id,
        lead_id,
    )
    value = await conn.fetchval(
        "SELECT user_id FROM lead_assignments WHERE client_id = $1 AND lead_id = $2", client_id, lead_id
    )
    return value if isinstance(value, uuid.UUID) else None


async def assignee_allowed(
    conn: asyncpg.Connection, client_id: str, user_id: uuid.UUID, *, below: uuid.UUID | None
) -> bool:
    """Whether `user_id` is an enabled user of the client that may be given work now — and, with
    `below`, one of that user's downline (themselves included: the walk up from `user_id` meets
    `below`). The user row is share-locked, so a disable waits for this transaction and is not
    overtaken by it."""
    enabled = await conn.fetchval(
        "SELECT enabled FROM portal_users WHERE id = $1 AND client_id = $2 FOR SHARE", user_id, client_id
    )
    if not enabled:
        return False
    if below is None:
        return True
    return bool(
        await conn.fetchval(
            "WITH RECURSIVE up (id, parent_user_id) AS ("
            "  SELECT id, parent_user_id FROM portal_users WHERE id = $1 AND client_id = $2"
            "  UNION"
            "  SELECT p.id, p.parent_user_id FROM portal_users p JOIN up ON p.id = up.parent_user_id"
            "  WHERE p.client_id = $2)"
            " SELECT EXISTS (SELECT 1 FROM up WHERE id = $3)",
            user_id,
            client_id,
            below,
        )
    )


async def set_assignment(
    conn: asyncpg.Connection,
    *,
    client_id: str,
    lead_id: uuid.UUID,
    user_id: uuid.UUID,
    assigned_by: uuid.UUID,
    now: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO lead_assignments (client_id, lead_id, user_id, assigned_by, assigned_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id, lead_id) DO UPDATE"
        " SET user_id = excluded.user_id, assigned_by = excluded.assigned_by, assigned_at = excluded.assigned_at",
        client_id,
        lead_id,
        user_id,
        assigned_by,
        now,
    )


async def clear_assignment(conn: asyncpg.Connection, client_id: str, lead_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM lead_assignments WHERE client_id = $1 AND lead_id = $2", client_id, lead_id)


# --- Files (D6) ------------------------------------------------------------------------------------


async def add_file_chunk(conn: asyncpg.Connection, file_id: uuid.UUID, seq: int, data: bytes) -> None:
    """One chunk of an upload, in the upload's transaction (its lead_files row comes last)."""
    await conn.execute("INSERT INTO lead_file_chunks (file_id, seq, data) VALUES ($1, $2, $3)", file_id, seq, data)


async def add_file(
    conn: asyncpg.Connection,
    *,
    file_id: uuid.UUID,
    client_id: str,
    lead_id: uuid.UUID,
    name: str,
    content_type: str,
    size: int,
    sha256: str,
    uploaded_by: uuid.UUID,
    now: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO lead_files (id, client_id, lead_id, name, content_type, size, sha256, uploaded_by, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        file_id,
        client_id,
        lead_id,
        name,
        content_type,
        size,
        sha256,
        uploaded_by,
        now,
    )


async def delete_file(conn: asyncpg.Connection, client_id: str, lead_id: uuid.UUID, file_id: uuid.UUID) -> bool:
    """The file and its chunks (ON DELETE CASCADE). The caller checked who may delete it."""
    return bool(
        await conn.fetchval(
            "DELETE FROM lead_files WHERE id = $1 AND client_id = $2 AND lead_id = $3 RETURNING true",
            file_id,
            client_id,
            lead_id,
        )
    )


async def merge_lead_counts(pool: asyncpg.Pool) -> int:
    """Merge the dashboard's per-transaction lead counts (migration 0630) into one row per client
    and bucket; returns how many rows went. Safe to run in several processes at once."""
    return int(await pool.fetchval("SELECT portal_lead_counts_merge()"))
