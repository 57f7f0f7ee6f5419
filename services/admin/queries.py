"""Every read the console's pages and API make of other services' tables (leads, deliveries,
returns, orders, dead letters, catalog versions), parameterised only. The console is the
seller's side: it sees every client, so these functions take no client scope; the client-scoped
rule of docs/architecture.md holds for the portal, whose users are clients."""

from __future__ import annotations

import uuid
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
            " (SELECT count(*) FROM dead_letters WHERE resolution IS NULL) AS open_dead_letters,"
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


# --- Leads ---------------------------------------------------------------------------------------

LEAD_COLUMNS = (
    "l.id, l.source_id, l.idempotency_key, l.lead_type_id, l.fields, l.status, l.reason, l.errors,"
    " l.original_lead_id, l.force_id, l.fingerprint, l.plan, l.skipped, l.max_sales, l.received_at, l.decided_at"
)


async def search_leads(pool: asyncpg.Pool, f: dict[str, Any], *, limit: int) -> list[asyncpg.Record]:
    """Leads matching every filter given (None: not filtered), newest first. `contact` matches any
    field value (email, phone digits...) through the trigram index of migration 0030."""
    return await sql.fetch(
        pool,
        statement(
            f"SELECT {LEAD_COLUMNS},"
            " (SELECT string_agg(DISTINCT d.client_id, ', ') FROM deliveries d"
            "  WHERE d.lead_id = l.id AND d.status = 'succeeded') AS sold_to"
            " FROM leads l WHERE (CAST(:id AS uuid) IS NULL OR l.id = :id)"
            " AND (CAST(:source AS text) IS NULL OR l.source_id = :source)"
            " AND (CAST(:key AS text) IS NULL OR l.idempotency_key = :key)"
            " AND (CAST(:status AS text) IS NULL OR l.status = :status)"
            " AND (CAST(:type AS text) IS NULL OR l.lead_type_id = :type)"
            " AND (CAST(:from AS timestamptz) IS NULL OR l.received_at >= :from)"
            " AND (CAST(:to AS timestamptz) IS NULL OR l.received_at < :to)"
            " AND (CAST(:contact AS text) IS NULL"
            "      OR jsonb_path_query_array(l.fields, '$.*')::text ILIKE '%' || :contact || '%'"
            "      OR jsonb_path_query_array(l.fields, '$.*')::text ILIKE '%' || CAST(:typed AS text) || '%')"
            " AND (CAST(:before_at AS timestamptz) IS NULL OR (l.received_at, l.id) < (:before_at, :before_id))"
            " ORDER BY l.received_at DESC, l.id DESC LIMIT :limit",
            id=f.get("id"),
            source=f.get("source"),
            key=f.get("key"),
            status=f.get("status"),
            type=f.get("type"),
            **{"from": f.get("from"), "to": f.get("to")},
            contact=f.get("contact"),
            typed=f.get("contact_as_typed"),
            before_at=f.get("before_at"),
            before_id=f.get("before_id"),
            limit=limit,
        ),
    )


async def lead(pool: asyncpg.Pool, lead_id: Any) -> asyncpg.Record | None:
    return await sql.fetchrow(pool, statement(f"SELECT {LEAD_COLUMNS} FROM leads l WHERE l.id = :id", id=lead_id))


async def lead_history(pool: asyncpg.Pool, lead_id: Any) -> dict[str, list[asyncpg.Record]]:
    """Everything that happened to a lead, from the tables that record it."""
    async with pool.acquire() as conn:
        deliveries = await sql.fetch(
            conn,
            statement(
                "SELECT id, client_id, delivery_account_id, price, account_price, status, attempts, reason,"
                " group_id, order_id, created_at, completed_at FROM deliveries WHERE lead_id = :id ORDER BY created_at",
                id=lead_id,
            ),
        )
        ids = [d["id"] for d in deliveries]
        attempts = await sql.fetch(
            conn,
            statement(
                "SELECT delivery_id, attempt, started_at, duration_ms, request, status_code, response, outcome, error"
                " FROM delivery_attempts WHERE delivery_id = ANY(CAST(:ids AS uuid[])) ORDER BY started_at, attempt",
                ids=ids,
            ),
        )
        confirmations = await sql.fetch(
            conn,
            statement(
                "SELECT delivery_id, offered, outcome, price_before, price_after, reason, created_at"
                " FROM delivery_price_confirmations WHERE delivery_id = ANY(CAST(:ids AS uuid[])) ORDER BY created_at",
                ids=ids,
            ),
        )
        returns = await sql.fetch(
            conn,
            statement(
                "SELECT id, client_id, reason, comment, status, decision_reason, note, requested_by, decided_by,"
                " credit, requested_at, decided_at FROM returns WHERE lead_id = :id ORDER BY requested_at",
                id=lead_id,
            ),
        )
        duplicates = await sql.fetch(
            conn,
            statement(
                "SELECT id, source_id, received_at, status FROM leads WHERE original_lead_id = :id"
                " ORDER BY received_at LIMIT 50",
                id=lead_id,
            ),
        )
        users = await sql.fetch(
            conn,
            statement(
                "SELECT id, client_id FROM portal_users WHERE client_id = ANY(CAST(:clients AS text[]))",
                clients=sorted({d["client_id"] for d in deliveries}),
            ),
        )
    return {
        "deliveries": deliveries,
        "attempts": attempts,
        "confirmations": confirmations,
        "returns": returns,
        "duplicates": duplicates,
        "users": users,
    }


async def emails(pool: asyncpg.Pool, notification_ids: list[Any]) -> list[asyncpg.Record]:
    return await sql.fetch(
        pool,
        statement(
            "SELECT notification_id, kind, recipients, subject, status, attempts, last_error, created_at, sent_at"
            " FROM notification_sends WHERE notification_id = ANY(CAST(:ids AS uuid[])) ORDER BY created_at",
            ids=notification_ids,
        ),
    )


# --- Accounts and orders -------------------------------------------------------------------------


async def order_exists(conn: asyncpg.Connection | asyncpg.Pool, order_id: str) -> bool:
    return bool(await sql.fetchval(conn, statement("SELECT true FROM orders WHERE id = :id", id=order_id)))


async def account_states(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    rows = await sql.fetch(
        pool,
        statement(
            "SELECT delivery_account_id, paused, paused_at, paused_reason, consecutive_failures"
            " FROM delivery_account_state"
        ),
    )
    return {r["delivery_account_id"]: r for r in rows}


async def order_payments(pool: asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    return await sql.fetch(
        pool,
        statement(
            "SELECT period, amount, note, recorded_at FROM order_payments WHERE order_id = :id ORDER BY id DESC",
            id=order_id,
        ),
    )


async def portal_user_count(conn: asyncpg.Connection | asyncpg.Pool, client_id: str) -> int:
    return int(
        await sql.fetchval(conn, statement("SELECT count(*) FROM portal_users WHERE client_id = :c", c=client_id))
    )


async def portal_users_by_client(pool: asyncpg.Pool) -> dict[str, list[asyncpg.Record]]:
    rows = await sql.fetch(
        pool,
        statement(
            "SELECT client_id, email, name, is_admin, enabled, password_hash IS NOT NULL AS has_password"
            " FROM portal_users ORDER BY client_id, email"
        ),
    )
    out: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        out.setdefault(row["client_id"], []).append(row)
    return out


async def lead_status(conn: asyncpg.Connection | asyncpg.Pool, lead_id: uuid.UUID, *, lock: bool = False) -> str | None:
    """A lead's status (None: no such lead); `lock` holds its row to the transaction's end."""
    text = "SELECT status FROM leads WHERE id = :id" + (" FOR SHARE" if lock else "")
    found = await sql.fetchval(conn, statement(text, id=lead_id))
    return str(found) if found is not None else None


async def processes(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every service process's last heartbeat (shared/health.py `report`), with the database's
    clock, so staleness is judged on one clock."""
    return await sql.fetch(
        pool,
        statement(
            "SELECT process_id, service, catalog_version, started_at, seen_at, now() AS now"
            " FROM process_heartbeats ORDER BY service, process_id"
        ),
    )
