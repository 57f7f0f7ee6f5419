"""The admin console's own SQL (staff users, sessions, login failures, API keys, the audit, the
dead letters' resolution), parameterised only. Reads of other services' tables for pages live in
queries.py; changes to their state go to them as commands."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared import sql
from shared.sql import statement

# --- Staff users ---------------------------------------------------------------------------------


async def staff_by_email(conn: asyncpg.Connection, email_key: str) -> asyncpg.Record | None:
    return await sql.fetchrow(conn, statement("SELECT * FROM staff_users WHERE email_key = :k", k=email_key))


async def staff_by_id(conn: asyncpg.Connection | asyncpg.Pool, staff_id: uuid.UUID) -> asyncpg.Record | None:
    return await sql.fetchrow(conn, statement("SELECT * FROM staff_users WHERE id = :id", id=staff_id))


async def list_staff(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    return await sql.fetch(
        conn, statement("SELECT id, email, name, role, enabled, created_at FROM staff_users ORDER BY email_key")
    )


async def insert_staff(
    conn: asyncpg.Connection,
    *,
    staff_id: uuid.UUID,
    email: str,
    email_key: str,
    name: str,
    role: str,
    password_hash: str | None,
    now: datetime,
) -> bool:
    """False when a staff user has that email already."""
    status = await sql.execute(
        conn,
        statement(
            "INSERT INTO staff_users (id, email, email_key, name, role, password_hash, created_at, password_changed_at)"
            " VALUES (:id, :email, :k, :name, :role, :hash, :now, :now) ON CONFLICT (email_key) DO NOTHING",
            id=staff_id,
            email=email,
            k=email_key,
            name=name,
            role=role,
            hash=password_hash,
            now=now,
        ),
    )
    return status.endswith(" 1")


async def update_staff(conn: asyncpg.Connection, staff_id: uuid.UUID, *, role: str, enabled: bool) -> bool:
    status = await sql.execute(
        conn,
        statement(
            "UPDATE staff_users SET role = :role, enabled = :enabled WHERE id = :id",
            id=staff_id,
            role=role,
            enabled=enabled,
        ),
    )
    return status.endswith(" 1")


async def enabled_owners(conn: asyncpg.Connection) -> int:
    return int(await sql.fetchval(conn, statement("SELECT count(*) FROM staff_users WHERE role = 'owner' AND enabled")))


async def lock_staff_table(conn: asyncpg.Connection) -> None:
    """Role changes one at a time, so two owners demoting each other cannot leave none."""
    await conn.execute("LOCK TABLE staff_users IN SHARE ROW EXCLUSIVE MODE")


async def set_password(conn: asyncpg.Connection, staff_id: uuid.UUID, password_hash: str, now: datetime) -> None:
    await sql.execute(
        conn,
        statement(
            "UPDATE staff_users SET password_hash = :h, password_changed_at = :now WHERE id = :id",
            id=staff_id,
            h=password_hash,
            now=now,
        ),
    )


# --- Login failures ------------------------------------------------------------------------------


async def lock_failures(conn: asyncpg.Connection, email_key: str) -> asyncpg.Record:
    await sql.execute(
        conn, statement("INSERT INTO staff_login_failures (email_key) VALUES (:k) ON CONFLICT DO NOTHING", k=email_key)
    )
    row = await sql.fetchrow(
        conn,
        statement(
            "SELECT failed_count, last_failed_at FROM staff_login_failures WHERE email_key = :k FOR UPDATE", k=email_key
        ),
    )
    assert row is not None
    return row


async def record_failure(conn: asyncpg.Connection, email_key: str, failed_count: int, now: datetime) -> None:
    await sql.execute(
        conn,
        statement(
            "UPDATE staff_login_failures SET failed_count = :n, last_failed_at = :now WHERE email_key = :k",
            k=email_key,
            n=failed_count,
            now=now,
        ),
    )


async def clear_failures(conn: asyncpg.Connection, email_key: str) -> None:
    await sql.execute(conn, statement("DELETE FROM staff_login_failures WHERE email_key = :k", k=email_key))


# --- Sessions ------------------------------------------------------------------------------------


async def insert_session(
    conn: asyncpg.Connection,
    *,
    session_id: uuid.UUID,
    staff_id: uuid.UUID,
    secret_hash: bytes,
    now: datetime,
    expires_at: datetime,
) -> None:
    await sql.execute(
        conn,
        statement(
            "INSERT INTO staff_sessions (id, staff_id, secret_hash, created_at, last_seen_at, expires_at)"
            " VALUES (:id, :staff, :h, :now, :now, :exp)",
            id=session_id,
            staff=staff_id,
            h=secret_hash,
            now=now,
            exp=expires_at,
        ),
    )


async def session_with_staff(conn: asyncpg.Connection, session_id: uuid.UUID) -> asyncpg.Record | None:
    return await sql.fetchrow(
        conn,
        statement(
            "SELECT s.id AS session_id, s.secret_hash, s.last_seen_at, s.expires_at, s.revoked_at,"
            " u.id AS staff_id, u.email, u.name, u.role, u.enabled"
            " FROM staff_sessions s JOIN staff_users u ON u.id = s.staff_id WHERE s.id = :id",
            id=session_id,
        ),
    )


async def touch_session(conn: asyncpg.Connection, session_id: uuid.UUID, now: datetime) -> None:
    await sql.execute(
        conn, statement("UPDATE staff_sessions SET last_seen_at = :now WHERE id = :id", id=session_id, now=now)
    )


async def revoke_session(conn: asyncpg.Connection, session_id: uuid.UUID, reason: str, now: datetime) -> bool:
    status = await sql.execute(
        conn,
        statement(
            "UPDATE staff_sessions SET revoked_at = :now, revoked_reason = :reason"
            " WHERE id = :id AND revoked_at IS NULL",
            id=session_id,
            reason=reason,
            now=now,
        ),
    )
    return status.endswith(" 1")


async def revoke_staff_sessions(conn: asyncpg.Connection, staff_id: uuid.UUID, reason: str, now: datetime) -> int:
    status = await sql.execute(
        conn,
        statement(
            "UPDATE staff_sessions SET revoked_at = :now, revoked_reason = :reason"
            " WHERE staff_id = :id AND revoked_at IS NULL",
            id=staff_id,
            reason=reason,
            now=now,
        ),
    )
    return int(status.split()[-1])


# --- API keys ------------------------------------------------------------------------------------


async def insert_key(
    conn: asyncpg.Connection,
    *,
    key_id: str,
    staff_id: uuid.UUID,
    name: str,
    role: str,
    secret_hash: bytes,
    now: datetime,
) -> None:
    await sql.execute(
        conn,
        statement(
            "INSERT INTO staff_api_keys (id, staff_id, name, role, secret_hash, created_at)"
            " VALUES (:id, :staff, :name, :role, :h, :now)",
            id=key_id,
            staff=staff_id,
            name=name,
            role=role,
            h=secret_hash,
            now=now,
        ),
    )


async def key_with_staff(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> asyncpg.Record | None:
    return await sql.fetchrow(
        conn,
        statement(
            "SELECT k.id AS key_id, k.role AS key_role, k.secret_hash, k.revoked_at, k.last_used_at,"
            " u.id AS staff_id, u.email, u.name, u.role, u.enabled"
            " FROM staff_api_keys k JOIN staff_users u ON u.id = k.staff_id WHERE k.id = :id",
            id=key_id,
        ),
    )


async def touch_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str, now: datetime, older_than: datetime) -> None:
    await sql.execute(
        conn,
        statement(
            "UPDATE staff_api_keys SET last_used_at = :now WHERE id = :id"
            " AND (last_used_at IS NULL OR last_used_at < :older)",
            id=key_id,
            now=now,
            older=older_than,
        ),
    )


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool, staff_id: uuid.UUID | None) -> list[asyncpg.Record]:
    """Every key (staff_id None: of everyone), newest first."""
    return await sql.fetch(
        conn,
        statement(
            "SELECT k.id, k.name, k.role, k.created_at, k.last_used_at, k.revoked_at, k.revoked_by,"
            " u.email AS staff_email, k.staff_id FROM staff_api_keys k JOIN staff_users u ON u.id = k.staff_id"
            " WHERE (CAST(:staff AS uuid) IS NULL OR k.staff_id = :staff) ORDER BY k.created_at DESC",
            staff=staff_id,
        ),
    )


async def revoke_key(conn: asyncpg.Connection, key_id: str, by: str, now: datetime) -> asyncpg.Record | None:
    """The key's row when this call revoked it; None when there is no such open key."""
    return await sql.fetchrow(
        conn,
        statement(
            "UPDATE staff_api_keys SET revoked_at = :now, revoked_by = :by"
            " WHERE id = :id AND revoked_at IS NULL RETURNING id, staff_id, name, role",
            id=key_id,
            by=by,
            now=now,
        ),
    )


async def key_owner(conn: asyncpg.Connection, key_id: str) -> uuid.UUID | None:
    value: uuid.UUID | None = await sql.fetchval(
        conn, statement("SELECT staff_id FROM staff_api_keys WHERE id = :id", id=key_id)
    )
    return value


# --- Audit ---------------------------------------------------------------------------------------


async def audit(
    conn: asyncpg.Connection,
    *,
    actor: str,
    staff_id: uuid.UUID | str | None,
    via: str,
    api_key_id: str | None,
    action: str,
    target: str,
    detail: dict[str, Any],
) -> None:
    await sql.execute(
        conn,
        statement(
            "INSERT INTO admin_audit (actor, staff_id, via, api_key_id, action, target, detail)"
            " VALUES (:actor, CAST(:staff AS uuid), :via, :key, :action, :target, :detail)",
            actor=actor,
            staff=str(staff_id) if staff_id is not None else None,
            via=via,
            key=api_key_id,
            action=action,
            target=target,
            detail=detail,
        ),
    )
