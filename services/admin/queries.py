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


# --- Returns -------------------------------------------------------------------------------------


async def returns(pool: asyncpg.Pool, *, status: str | None, client_id: str | None, limit: int) -> list[asyncpg.Record]:
    """Returns with their lead and delivery, oldest pending first (the queue) or newest first."""
    order = "ASC" if status == "pending" else "DESC"
    return await sql.fetch(
        pool,
        statement(
            "SELECT r.id, r.client_id, r.lead_id, r.delivery_id, r.delivery_account_id, r.order_id, r.reason,"
            " r.comment, r.status, r.decision_reason, r.note, r.requested_by, r.decided_by, r.credit,"
            " r.delivered_at, r.requested_at, r.decided_at, l.lead_type_id, l.source_id, l.fields,"
            " d.price, d.completed_at"
            " FROM returns r JOIN leads l ON l.id = r.lead_id LEFT JOIN deliveries d ON d.id = r.delivery_id"
            " WHERE (CAST(:status AS text) IS NULL OR r.status = :status)"
            " AND (CAST(:client AS text) IS NULL OR r.client_id = :client)"
            f" ORDER BY r.requested_at {order}, r.id LIMIT :limit",
            status=status,
            client=client_id,
            limit=limit,
        ),
    )


async def cap_usage(pool: asyncpg.Pool, scope: str, key: str, start: Any, end: Any) -> tuple[int, int]:
    """(leads delivered, returns counted) in [start, end) of delivery time for a delivery account
    or an order: the figures the returns service's cap rule uses (services/returns/store.py)."""
    if scope == "delivery_account":
        text = (
            "SELECT (SELECT count(*) FROM deliveries WHERE delivery_account_id = :key AND status = 'succeeded'"
            " AND completed_at >= :start AND completed_at < :end) AS delivered,"
            " (SELECT count(*) FROM returns WHERE delivery_account_id = :key AND holds_lead"
            " AND status IN ('pending', 'approved') AND delivered_at >= :start AND delivered_at < :end) AS counted"
        )
    else:
        text = (
            "SELECT (SELECT count(*) FROM order_charges c JOIN deliveries d ON d.id = c.delivery_id"
            " WHERE c.order_id = :key AND c.status IN ('confirmed', 'credited')"
            " AND d.completed_at >= :start AND d.completed_at < :end) AS delivered,"
            " (SELECT count(*) FROM returns WHERE order_id = :key AND holds_lead"
            " AND status IN ('pending', 'approved') AND delivered_at >= :start AND delivered_at < :end) AS counted"
        )
    row = await sql.fetchrow(pool, statement(text, key=key, start=start, end=end))
    assert row is not None
    return int(row["delivered"]), int(row["counted"])


async def order_return_pct(pool: asyncpg.Pool, order_id: str) -> str | None:
    value: str | None = await sql.fetchval(
        pool, statement("SELECT spec->>'max_return_pct' FROM orders WHERE id = :id", id=order_id)
    )
    return value


async def return_statuses(conn: asyncpg.Connection | asyncpg.Pool, ids: list[Any]) -> dict[Any, asyncpg.Record]:
    rows = await sql.fetch(
        conn,
        statement("SELECT id, client_id, status FROM returns WHERE id = ANY(CAST(:ids AS uuid[]))", ids=ids),
    )
    return {r["id"]: r for r in rows}
