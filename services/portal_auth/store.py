"""portal_auth SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

USER_COLUMNS = (
    "id, client_id, email, name, password_hash, is_admin, view_downline, enabled, notify_new_leads,"
    " parent_user_id, phone"
)

# Columns update_user may set; the names are ours, never the caller's.
UPDATABLE = ("name", "phone", "notify_new_leads", "is_admin", "view_downline", "enabled", "parent_user_id")


# --- Users ---------------------------------------------------------------------------------------


async def user_by_email(conn: asyncpg.Connection, email_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM portal_users WHERE lower(email) = $1", email_key)


async def user_by_id(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM portal_users WHERE id = $1{lock}", user_id)


async def lock_client_users(conn: asyncpg.Connection, client_id: str) -> None:
    """Serialise user changes of one client until commit (first-user and last-admin rules)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('portal_users:' || $1, 0))", client_id)


async def count_users(conn: asyncpg.Connection, client_id: str) -> int:
    return await conn.fetchval("SELECT count(*) FROM portal_users WHERE client_id = $1", client_id)


async def count_enabled_admins(conn: asyncpg.Connection, client_id: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM portal_users WHERE client_id = $1 AND is_admin AND enabled", client_id
    )


async def insert_user(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    client_id: str,
    email: str,
    name: str,
    password_hash: str | None,
    is_admin: bool,
    view_downline: bool,
    enabled: bool,
    notify_new_leads: bool,
    parent_user_id: uuid.UUID | None,
    phone: str | None,
    now: datetime,
) -> asyncpg.Record:
    """Raises asyncpg.UniqueViolationError when the email is taken (by any client's user)."""
    return await conn.fetchrow(
        "INSERT INTO portal_users (id, client_id, email, name, password_hash, is_admin, view_downline,"
        " enabled, notify_new_leads, parent_user_id, phone, created_at, updated_at, password_changed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::timestamptz, $12::timestamptz,"
        " CASE WHEN $5::text IS NULL THEN NULL ELSE $12::timestamptz END)"
        f" RETURNING {USER_COLUMNS}",
        user_id,
        client_id,
        email,
        name,
        password_hash,
        is_admin,
        view_downline,
        enabled,
        notify_new_leads,
        parent_user_id,
        phone,
        now,
    )


async def update_user(
    conn: asyncpg.Connection, user_id: uuid.UUID, changes: dict[str, Any], now: datetime
) -> asyncpg.Record:
    columns = [c for c in UPDATABLE if c in changes]
    assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=3))
    return await conn.fetchrow(
        f"UPDATE portal_users SET updated_at = $2{', ' if columns else ''}{assignments} WHERE id = $1"
        f" RETURNING {USER_COLUMNS}",
        user_id,
        now,
        *(changes[c] for c in columns),
    )


async def set_password(conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE portal_users SET password_hash = $2, password_changed_at = $3, updated_at = $3 WHERE id = $1",
        user_id,
        password_hash,
        now,
    )


async def client_users(conn: asyncpg.Connection, client_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {USER_COLUMNS} FROM portal_users WHERE client_id = $1 ORDER BY lower(email)", client_id
    )


async def users_by_ids(conn: asyncpg.Connection, client_id: str, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {USER_COLUMNS} FROM portal_users WHERE client_id = $1 AND id = ANY($2::uuid[]) ORDER BY lower(email)",
        client_id,
        ids,
    )


async def downline(conn: asyncpg.Connection, user_id: uuid.UUID, client_id: str) -> list[uuid.UUID]:
    """The user and everyone whose parent chain leads to them, within one client. UNION (not
    UNION ALL) stops at a cycle should one ever exist."""
    rows = await conn.fetch(
        "WITH RECURSIVE below(id) AS ("
        "  SELECT id FROM portal_users WHERE id = $1 AND client_id = $2"
        "  UNION SELECT u.id FROM portal_users u JOIN below b ON u.parent_user_id = b.id"
        "  WHERE u.client_id = $2"
        ") SELECT id FROM below",
        user_id,
        client_id,
    )
    return [r["id"] for r in rows]


async def ancestors(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The chain above a user (parent, grandparent...), the user included."""
    rows = await conn.fetch(
        "WITH RECURSIVE above(id, parent) AS ("
        "  SELECT id, parent_user_id FROM portal_users WHERE id = $1"
        "  UNION SELECT u.id, u.parent_user_id FROM portal_users u JOIN above a ON u.id = a.parent"
        ") SELECT id FROM above",
        user_id,
    )
    return [r["id"] for r in rows]


# --- Failed logins -------------------------------------------------------------------------------


async def lock_failures(conn: asyncpg.Connection, email_key: str) -> asyncpg.Record:
    """The failure counter of an email, locked until commit so that parallel guesses queue."""
    await conn.execute("INSERT INTO portal_login_failures (email_key) VALUES ($1) ON CONFLICT DO NOTHING", email_key)
    return await conn.fetchrow(
        "SELECT failed_count, last_failed_at FROM portal_login_failures WHERE email_key = $1 FOR UPDATE",
        email_key,
    )


async def record_failure(conn: asyncpg.Connection, email_key: str, failed_count: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE portal_login_failures SET failed_count = $2, last_failed_at = $3 WHERE email_key = $1",
        email_key,
        failed_count,
        now,
    )


async def clear_failures(conn: asyncpg.Connection, email_key: str) -> None:
    await conn.execute("DELETE FROM portal_login_failures WHERE email_key = $1", email_key)


# --- Sessions ------------------------------------------------------------------------------------


async def insert_session(
    conn: asyncpg.Connection,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    client_id: str,
    secret_hash: bytes,
    now: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO portal_sessions (id, user_id, client_id, secret_hash, created_at, last_seen_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $5, $6)",
        session_id,
        user_id,
        client_id,
        secret_hash,
        now,
        expires_at,
    )


async def session_with_user(conn: asyncpg.Connection, session_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT s.id AS session_id, s.secret_hash, s.last_seen_at, s.expires_at, s.revoked_at,"
        " u.id, u.client_id, u.email, u.name, u.password_hash, u.is_admin, u.view_downline, u.enabled"
        " FROM portal_sessions s JOIN portal_users u ON u.id = s.user_id WHERE s.id = $1",
        session_id,
    )


async def touch_session(conn: asyncpg.Connection, session_id: uuid.UUID, now: datetime) -> None:
    # GREATEST: a verify that arrives late never moves the idle clock backwards.
    touch = "UPDATE portal_sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id = $1"
    if conn.is_in_transaction():  # part of a larger change: it commits as that change does
        await conn.execute(touch, session_id, now)
        return
    # Every page's session check writes this: committed without waiting for the WAL flush (a
    # flush took 1-4 ms of each page, more when the disk is busy). A crash can lose only the
    # last fraction of a second of idle-clock moves, so a session idles out that much early at
    # worst; revocations and everything else still commit durably.
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        await conn.execute(touch, session_id, now)


async def revoke_session(conn: asyncpg.Connection, session_id: uuid.UUID, reason: str, now: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "UPDATE portal_sessions SET revoked_at = $3, revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL"
            " RETURNING true",
            session_id,
            reason,
            now,
        )
    )


async def revoke_user_sessions(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str, now: datetime, *, keep: uuid.UUID | None = None
) -> int:
    rows = await conn.fetch(
        "UPDATE portal_sessions SET revoked_at = $3, revoked_reason = $2"
        " WHERE user_id = $1 AND revoked_at IS NULL AND ($4::uuid IS NULL OR id <> $4) RETURNING id",
        user_id,
        reason,
        now,
        keep,
    )
    return len(rows)


async def prune(conn: asyncpg.Connection, now: datetime, failures_before: datetime) -> None:
    """Forget what can no longer matter: ended sessions, spent reset tokens, old failure counters."""
    await conn.execute("DELETE FROM portal_sessions WHERE expires_at < $1", now)
    await conn.execute("DELETE FROM portal_password_resets WHERE expires_at < $1", now)
    await conn.execute(
        "DELETE FROM portal_login_failures WHERE last_failed_at IS NULL OR last_failed_at < $1", failures_before
    )


# --- Password resets -----------------------------------------------------------------------------


async def insert_reset(
    conn: asyncpg.Connection,
    *,
    reset_id: uuid.UUID,
    user_id: uuid.UUID,
    secret_hash: bytes,
    purpose: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO portal_password_resets (id, user_id, secret_hash, purpose, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        reset_id,
        user_id,
        secret_hash,
        purpose,
        now,
        expires_at,
    )


async def reset_by_id(
    conn: asyncpg.Connection, reset_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT id, user_id, secret_hash, expires_at, used_at FROM portal_password_resets WHERE id = $1{lock}",
        reset_id,
    )


async def recent_reset(conn: asyncpg.Connection, user_id: uuid.UUID, since: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM portal_password_resets WHERE user_id = $1 AND used_at IS NULL AND created_at >= $2"
            " LIMIT 1",
            user_id,
            since,
        )
    )


async def spend_resets(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> None:
    """A new password spends every outstanding reset link of the user, not only the one used."""
    await conn.execute(
        "UPDATE portal_password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL", user_id, now
    )


# --- Leads (read only: router owns deliveries) -----------------------------------------------------


async def lead_sold_to(conn: asyncpg.Connection, lead_id: uuid.UUID, client_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM deliveries WHERE lead_id = $1 AND client_id = $2 AND status = 'succeeded' LIMIT 1",
            lead_id,
            client_id,
        )
    )
