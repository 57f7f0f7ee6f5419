"""Every read the console's pages and API make of other services' tables (leads, deliveries,
returns, orders, dead letters, catalog versions), parameterised only. The console is the
seller's side: it sees every client, so these functions take no client scope; the client-scoped
rule of docs/architecture.md holds for the portal, whose users are clients."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared import sql
from shared.sql import statement


async def overview(pool: asyncpg.Pool) -> dict[str, Any]:
    row = await sql.fetchrow(
        pool,
        statement(
            "SELECT (SELECT coalesce(max(version), 0) FROM catalog_versions) AS catalog_version,"
            " (SELECT count(*) FROM returns WHERE status = 'pending') AS pending_returns,"
            " (SELECT count(*) FROM dead_letters) AS open_dead_letters,"
            " (SELECT count(*) FROM delivery_account_state WHERE paused) AS paused_accounts,"
            " (SELECT count(*) FROM outbox) AS outbox_backlog,"
            " (SELECT extract(epoch FROM now() - min(created_at)) FROM outbox) AS outbox_age_seconds,"
            " (SELECT count(*) FROM leads WHERE received_at > now() - interval '1 day') AS leads_today"
        ),
    )
    assert row is not None
    return dict(row)


async def audit(
    pool: asyncpg.Pool, *, before: int | None, action: str | None, actor: str | None, limit: int
) -> list[asyncpg.Record]:
    """The audit, newest first; `before`: ids below it (the next page)."""
    return await sql.fetch(
        pool,
        statement(
            "SELECT id, at, actor, via, api_key_id, action, target, detail FROM admin_audit"
            " WHERE (CAST(:before AS bigint) IS NULL OR id < :before)"
            " AND (CAST(:action AS text) IS NULL OR action = :action)"
            " AND (CAST(:actor AS text) IS NULL OR actor = :actor)"
            " ORDER BY id DESC LIMIT :limit",
            before=before,
            action=action or None,
            actor=actor or None,
            limit=limit,
        ),
    )


async def catalog_versions(pool: asyncpg.Pool, *, before: int | None, limit: int) -> list[asyncpg.Record]:
    return await sql.fetch(
        pool,
        statement(
            "SELECT version, applied_at, applied_by, digest FROM catalog_versions"
            " WHERE (CAST(:before AS bigint) IS NULL OR version < :before) ORDER BY version DESC LIMIT :limit",
            before=before,
            limit=limit,
        ),
    )


async def catalog_version(pool: asyncpg.Pool, version: int) -> asyncpg.Record | None:
    return await sql.fetchrow(
        pool,
        statement(
            "SELECT version, applied_at, applied_by, digest, document FROM catalog_versions WHERE version = :v",
            v=version,
        ),
    )


async def previous_version(pool: asyncpg.Pool, version: int) -> asyncpg.Record | None:
    return await sql.fetchrow(
        pool,
        statement(
            "SELECT version, document FROM catalog_versions WHERE version < :v ORDER BY version DESC LIMIT 1",
            v=version,
        ),
    )
