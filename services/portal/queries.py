"""Every read the Client Portal makes, in one place. Each function takes the viewer first — the
client, and the user's scope within it (rules.Viewer) — and applies both in SQL: a lead is a
succeeded delivery *to this client*, visible under the scope; another client's lead id simply
finds nothing. Values are always bound parameters; the only text put into SQL is this module's
own (sort expressions and directions chosen from a closed set).

The portal reads other services' tables (router's leads and deliveries, returns, notifier's
appointments, portal_auth's users) read-only, and its own (lead_assignments, portal_activity).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from services.portal.rules import (
    COUNT_CAP,
    NUMBER_KEYS,
    PAGE_SIZE,
    RETURNS_PAGE_SIZE,
    TEXT_KEYS,
    Cursor,
    LeadFilter,
    ReturnsFilter,
    Sort,
    Viewer,
    day_start,
    on_count_grid,
)
from shared.contracts import OrderFiguresView
from shared.orders import order_figures

# The searchable text of a lead: every field value, as portal_leads.search holds it (migration
# 0620; the same expression as leads' own trigram index of 0030).
LEAD_TEXT = "jsonb_path_query_array(l.fields, '$.*')::text"

# portal_leads' sort-key columns (rules.TEXT_KEYS, rules.NUMBER_KEYS): the only column names a
# sort puts into SQL.
KEY_COLUMNS = frozenset({*TEXT_KEYS, *NUMBER_KEYS})


class Params:
    """Collects bound parameters while a statement is written: `p(value)` -> "$n"."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _visible(viewer: Viewer, p: Params, d: str = "d") -> str:
    """SQL for rules.Viewer.sees: scope `all` sees the client's every lead; otherwise the lead
    must be assigned to one of the viewer's users."""
    if viewer.user_ids is None:
        return "TRUE"
    users = p(list(viewer.user_ids))
    return (
        f"EXISTS (SELECT 1 FROM lead_assignments a WHERE a.client_id = {d}.client_id"
        f" AND a.lead_id = {d}.lead_id AND a.user_id = ANY({users}::uuid[]))"
    )


# --- The lead list (C1–C6): the portal's own portal_leads, one row per succeeded delivery ----------


async def ensure_sort_columns(
    conn: asyncpg.Connection, client_id: str, columns: Mapping[str, str], catalog_version: int
) -> bool:
    """Make portal_leads' key columns of the client hold `columns` (field -> key column, from
    rules.sort_columns): when the stored assignment differs, replace it and recompute the keys of
    the client's rows, in one transaction. False when the stored one comes from a newer catalog
    (this process has not seen it yet): it is left alone.

    The client's advisory lock (migration 0620, portal_sort_lock_shared), taken exclusively here,
    waits for every transaction whose trigger keyed one of the client's rows by the old columns,
    and holds the client's new deliveries until the keys are rewritten: no row is keyed by columns
    other than the ones that end up stored. Other clients' deliveries go on. It happens when the
    catalog changes a client's list columns or lead types (and once per client after 0620)."""
    wanted = {(column, field) for field, column in columns.items()}

    def stored_matches(rows: list[asyncpg.Record]) -> bool | None:
        if {(r["key_column"], r["field"]) for r in rows} == wanted:
            return True
        if any(r["catalog_version"] > catalog_version for r in rows):
            return False
        return None

    sql = "SELECT key_column, field, catalog_version FROM portal_sort_columns WHERE client_id = $1"
    decided = stored_matches(await conn.fetch(sql, client_id))
    if decided is not None:
        return decided
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(620, hashtext($1))", client_id)
        decided = stored_matches(await conn.fetch(sql, client_id))
        if decided is not None:
            return decided
        await conn.execute("DELETE FROM portal_sort_columns WHERE client_id = $1", client_id)
        await conn.executemany(
            "INSERT INTO portal_sort_columns (client_id, key_column, field, catalog_version) VALUES ($1, $2, $3, $4)",
            [(client_id, column, field, catalog_version) for field, column in columns.items()],
        )
        # Rows whose keys come out the same are not rewritten (a column added keeps the others).
        keys = "t1, t2, t3, t4, t5, n1, n2"
        await conn.execute(
            f"UPDATE portal_leads pl SET ({keys}) = (k.t1, k.t2, k.t3, k.t4, k.t5, k.n1, k.n2)"
            " FROM leads l, portal_sort_keys($1, l.fields) k"
            f" WHERE pl.client_id = $1 AND l.id = pl.lead_id AND (pl.{keys.replace(', ', ', pl.')})"
            " IS DISTINCT FROM (k.t1, k.t2, k.t3, k.t4, k.t5, k.n1, k.n2)",
            client_id,
        )
    return True


def _sort_key(sort: Sort) -> tuple[str, str]:
    """(SQL expression, its type) the list is ordered by before delivery time and id."""
    if sort.kind == "delivered":
        return "pl.completed_at", "timestamptz"
    if sort.kind == "price":
        return "pl.price", "numeric"
    if sort.kind == "type":
        return "pl.lead_type_id", "text"
    if sort.column not in KEY_COLUMNS:
        raise ValueError(f"not a sort-key column: {sort.column!r}")
    return f"pl.{sort.column}", "numeric" if sort.column in NUMBER_KEYS else "text"


def _lead_filter(viewer: Viewer, f: LeadFilter, zone: str, p: Params) -> str:
    start, end = f.bounds(zone)
    clauses = [
        f"pl.client_id = {p(viewer.client_id)}",
        f"pl.completed_at >= {p(start)}",
        f"pl.completed_at < {p(end)}",
    ]
    if f.lead_type:
        clauses.append(f"pl.lead_type_id = {p(f.lead_type)}")
    if f.search_pattern:
        clauses.append(f"pl.search ILIKE {p(f.search_pattern)}")
    if f.assigned == "nobody":
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM lead_assignments a WHERE a.client_id = pl.client_id AND a.lead_id = pl.lead_id)"
        )
    elif f.assigned:
        clauses.append(
            "EXISTS (SELECT 1 FROM lead_assignments a WHERE a.client_id = pl.client_id AND a.lead_id = pl.lead_id"
            f" AND a.user_id = {p(f.assigned)}::uuid)"
        )
    clauses.append(_visible(viewer, p, "pl"))
    return " AND ".join(clauses)


def _ordered(f: LeadFilter, p: Params, where: str) -> tuple[str, str, str]:
    """(WHERE with the keyset bound, ORDER BY, the sort key expression) of the list's order: the
    key, then delivery time and id, so every row has one place and a page ends at a definite row.
    Each order is one index of portal_leads, (client_id, key, completed_at, delivery_id), read
    forwards or backwards; sorted by delivery time the key is that time: (time, id) alone."""
    key, key_type = _sort_key(f.sort)
    direction = "ASC" if f.sort.direction == "asc" else "DESC"
    keys = (
        ["pl.completed_at", "pl.delivery_id"]
        if f.sort.kind == "delivered"
        else [key, "pl.completed_at", "pl.delivery_id"]
    )
    if f.after is not None:
        after = f.after
        op = ">" if direction == "ASC" else "<"
        bound = [f"{p(after.completed_at)}::timestamptz", f"{p(after.delivery_id)}::uuid"]
        if f.sort.kind != "delivered":
            bound.insert(0, f"{p(after.key)}::{key_type}")
        where += f" AND ({', '.join(keys)}) {op} ({', '.join(bound)})"
    return where, ", ".join(f"{k} {direction}" for k in keys), key


async def lead_page(conn: asyncpg.Connection, viewer: Viewer, f: LeadFilter, zone: str) -> list[asyncpg.Record]:
    """One page of the lead list (PAGE_SIZE + 1 rows: the extra one says there is a next page),
    keyset-paginated after `f.after`, each with its latest return status."""
    p = Params()
    where, order, key = _ordered(f, p, _lead_filter(viewer, f, zone, p))
    direction = "ASC" if f.sort.direction == "asc" else "DESC"
    client = p(viewer.client_id)
    sql = (
        "WITH page AS ("
        f" SELECT pl.delivery_id, pl.lead_id, pl.completed_at, pl.price, pl.lead_type_id, {key} AS sort_key"
        " FROM portal_leads pl"
        f" WHERE {where}"
        f" ORDER BY {order}"
        f" LIMIT {PAGE_SIZE + 1})"
        " SELECT page.*, l.fields, (SELECT r.status FROM returns r"
        f"  WHERE r.client_id = {client} AND r.lead_id = page.lead_id"
        "  ORDER BY r.requested_at DESC LIMIT 1) AS return_status,"
        " (SELECT coalesce(nullif(u.name, ''), u.email) FROM lead_assignments a JOIN portal_users u ON u.id = a.user_id"
        f"  WHERE a.client_id = {client} AND a.lead_id = page.lead_id) AS assigned_to"
        " FROM page JOIN leads l ON l.id = page.lead_id"
        f" ORDER BY sort_key {direction}, completed_at {direction}, delivery_id {direction}"
    )
    return await conn.fetch(sql, *p.values)


async def lead_count(conn: asyncpg.Connection, viewer: Viewer, f: LeadFilter, zone: str) -> int:
    """How many leads the filter matches, counted up to COUNT_CAP + 1 (shown as "10,000+"):
    counting a whole year of a big client on every page load would cost more than the page."""
    p = Params()
    where = _lead_filter(viewer, f, zone, p)
    return int(
        await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM portal_leads pl WHERE {where} LIMIT {COUNT_CAP + 1}) matched",
            *p.values,
        )
    )


async def export_rows(
    conn: asyncpg.Connection, viewer: Viewer, f: LeadFilter, zone: str, *, batch: int = 1000
) -> AsyncIterator[asyncpg.Record]:
    """Every lead the filter matches, in the list's order, from the first: the list's keyset
    pages, `batch` rows each, so memory stays flat however many there are and every batch is an
    index range scan that starts streaming at once (one statement for all 100,000 was planned as a
    hash join over every lead and a sort spilled to disk, nothing sent before it was done). The
    caller holds `conn` in a repeatable-read transaction: every batch sees the same leads."""
    after = None
    while True:
        p = Params()
        page = dataclasses.replace(f, after=after)
        where, order, key = _ordered(page, p, _lead_filter(viewer, page, zone, p))
        rows = await conn.fetch(
            f"SELECT pl.delivery_id, pl.lead_id, pl.completed_at, pl.price, pl.lead_type_id, {key} AS sort_key,"
            " l.fields, (SELECT r.status FROM returns r WHERE r.client_id = pl.client_id AND r.lead_id = pl.lead_id"
            "  ORDER BY r.requested_at DESC LIMIT 1) AS return_status"
            " FROM portal_leads pl JOIN leads l ON l.id = pl.lead_id"
            f" WHERE {where} ORDER BY {order} LIMIT {int(batch)}",
            *p.values,
        )
        for record in rows:
            yield record
        if len(rows) < batch:
            return
        last = rows[-1]
        after = Cursor(last["sort_key"], last["completed_at"], last["delivery_id"])


async def lead_detail(conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID) -> asyncpg.Record | None:
    """One lead as delivered to the viewer's client, or None — also when it exists but belongs
    to another client or lies outside the viewer's scope (the page then says 404, never 403)."""
    p = Params()
    client, lead = p(viewer.client_id), p(lead_id)
    return await conn.fetchrow(
        "SELECT d.id AS delivery_id, d.lead_id, d.completed_at, d.price, l.lead_type_id, l.fields,"
        " a.user_id AS assigned_user_id, u.name AS assigned_name, u.email AS assigned_email"
        " FROM deliveries d JOIN leads l ON l.id = d.lead_id"
        " LEFT JOIN lead_assignments a ON a.client_id = d.client_id AND a.lead_id = d.lead_id"
        " LEFT JOIN portal_users u ON u.id = a.user_id"
        f" WHERE d.client_id = {client} AND d.lead_id = {lead} AND d.status = 'succeeded'"
        f" AND {_visible(viewer, p)}"
        " ORDER BY d.completed_at DESC LIMIT 1",
        *p.values,
    )


def _lead_visible(viewer: Viewer, p: Params, client: str, lead: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM deliveries d WHERE d.client_id = {client} AND d.lead_id = {lead}"
        f" AND d.status = 'succeeded' AND {_visible(viewer, p)})"
    )


async def latest_return(conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID) -> asyncpg.Record | None:
    p = Params()
    client, lead = p(viewer.client_id), p(lead_id)
    return await conn.fetchrow(
        "SELECT status, reason, comment, decision_reason, note, credit, requested_at, decided_at FROM returns"
        f" WHERE client_id = {client} AND lead_id = {lead} AND {_lead_visible(viewer, p, client, lead)}"
        " ORDER BY requested_at DESC LIMIT 1",
        *p.values,
    )


async def lead_activity(
    conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID, limit: int = 20
) -> list[asyncpg.Record]:
    """Emails the client's users sent about the lead, newest first."""
    p = Params()
    client, lead = p(viewer.client_id), p(lead_id)
    return await conn.fetch(
        "SELECT pa.kind, pa.recipients, pa.subject, pa.created_at, u.name AS user_name, u.email AS user_email"
        " FROM portal_activity pa JOIN portal_users u ON u.id = pa.user_id"
        f" WHERE pa.client_id = {client} AND pa.lead_id = {lead} AND {_lead_visible(viewer, p, client, lead)}"
        f" ORDER BY pa.created_at DESC LIMIT {int(limit)}",
        *p.values,
    )


# --- Users (portal_auth's table, read-only) ----------------------------------------------------------

USER_COLUMNS = (
    "u.id, u.client_id, u.email, u.name, u.phone, u.is_admin, u.view_downline, u.enabled,"
    " u.notify_new_leads, u.parent_user_id, u.password_hash IS NOT NULL AS has_password"
)


async def portal_user(conn: asyncpg.Connection, viewer: Viewer, user_id: uuid.UUID) -> asyncpg.Record | None:
    """One user of the viewer's client whom the viewer may see (admins: anyone; others
    themselves and their downline), or None."""
    p = Params()
    client, user = p(viewer.client_id), p(user_id)
    return await conn.fetchrow(
        f"SELECT {USER_COLUMNS} FROM portal_users u WHERE u.client_id = {client} AND u.id = {user}"
        f" AND {_user_visible(viewer, p)}",
        *p.values,
    )


def _user_visible(viewer: Viewer, p: Params) -> str:
    if viewer.user_ids is None:
        return "TRUE"
    return f"u.id = ANY({p(list(viewer.user_ids))}::uuid[])"


async def portal_users(conn: asyncpg.Connection, viewer: Viewer) -> list[asyncpg.Record]:
    """The client's users the viewer may see (admins: all; others themselves and their downline),
    by name then email."""
    p = Params()
    client = p(viewer.client_id)
    return await conn.fetch(
        f"SELECT {USER_COLUMNS} FROM portal_users u WHERE u.client_id = {client} AND {_user_visible(viewer, p)}"
        " ORDER BY lower(u.name), lower(u.email)",
        *p.values,
    )


async def assignable_users(conn: asyncpg.Connection, viewer: Viewer) -> list[asyncpg.Record]:
    """The users the viewer may assign leads and appointments to: every enabled user of the client
    for an admin; an enabled user of their downline (themselves included) for View Downline; only
    themselves otherwise (scope `own` assigns no leads, but books appointments for themselves)."""
    p = Params()
    client = p(viewer.client_id)
    return await conn.fetch(
        f"SELECT {USER_COLUMNS} FROM portal_users u WHERE u.client_id = {client} AND u.enabled"
        f" AND {_user_visible(viewer, p)} ORDER BY lower(u.name), lower(u.email)",
        *p.values,
    )


# --- Appointments (notifier's table, read-only) --------------------------------------------------------

APPOINTMENT_COLUMNS = (
    "ap.id, ap.client_id, ap.lead_id, ap.assigned_user_id, ap.created_by_user_id, ap.title, ap.notes,"
    " ap.starts_at, ap.reminder_minutes, ap.status, ap.reminder_queued_at, ap.created_at"
)


async def lead_appointments(conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID) -> list[asyncpg.Record]:
    """A lead's appointments the viewer may see (admins: all; others: those assigned to one of
    their users), soonest first, cancelled ones included."""
    p = Params()
    client, lead = p(viewer.client_id), p(lead_id)
    return await conn.fetch(
        f"SELECT {APPOINTMENT_COLUMNS}, u.name AS assigned_name, u.email AS assigned_email,"
        " l.lead_type_id, l.fields"
        " FROM appointments ap LEFT JOIN portal_users u ON u.id = ap.assigned_user_id"
        " LEFT JOIN leads l ON l.id = ap.lead_id"
        f" WHERE ap.client_id = {client} AND ap.lead_id = {lead} AND {_appointment_visible(viewer, p)}"
        " ORDER BY ap.starts_at, ap.id",
        *p.values,
    )


async def appointment(conn: asyncpg.Connection, viewer: Viewer, appointment_id: uuid.UUID) -> asyncpg.Record | None:
    """One appointment of the viewer's client that the viewer may see, or None (404)."""
    p = Params()
    client, appointment_param = p(viewer.client_id), p(appointment_id)
    return await conn.fetchrow(
        f"SELECT {APPOINTMENT_COLUMNS}, u.name AS assigned_name, u.email AS assigned_email,"
        " l.lead_type_id, l.fields"
        " FROM appointments ap LEFT JOIN portal_users u ON u.id = ap.assigned_user_id"
        " LEFT JOIN leads l ON l.id = ap.lead_id"
        f" WHERE ap.client_id = {client} AND ap.id = {appointment_param} AND {_appointment_visible(viewer, p)}",
        *p.values,
    )


async def appointment_list(
    conn: asyncpg.Connection, viewer: Viewer, *, when: str, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """The Appointments tab: `upcoming` (scheduled, not started; soonest first), `past`
    (scheduled, started; latest first) or `cancelled` (latest first), each with its lead and
    assignee, at most `limit`."""
    p = Params()
    client = p(viewer.client_id)
    if when == "upcoming":
        condition, order = f"ap.status = 'scheduled' AND ap.starts_at >= {p(now)}", "ap.starts_at, ap.id"
    elif when == "past":
        condition, order = f"ap.status = 'scheduled' AND ap.starts_at < {p(now)}", "ap.starts_at DESC, ap.id DESC"
    else:
        condition, order = "ap.status = 'cancelled'", "ap.starts_at DESC, ap.id DESC"
    return await conn.fetch(
        f"WITH chosen AS (SELECT {APPOINTMENT_COLUMNS} FROM appointments ap"
        f" WHERE ap.client_id = {client} AND {condition} AND {_appointment_visible(viewer, p)}"
        f" ORDER BY {order} LIMIT {int(limit)})"
        " SELECT ap.*, l.lead_type_id, l.fields, u.name AS assigned_name, u.email AS assigned_email"
        " FROM chosen ap LEFT JOIN leads l ON l.id = ap.lead_id LEFT JOIN portal_users u ON u.id = ap.assigned_user_id"
        f" ORDER BY {order}",
        *p.values,
    )


# --- Dashboard ------------------------------------------------------------------------------------


async def leads_per_day(conn: asyncpg.Connection, viewer: Viewer, first: date, days: int, zone: str) -> dict[date, int]:
    """Leads received (succeeded deliveries, by completion) per local day of the `days` days from
    `first`: each day is [its local midnight, the next local midnight) in `zone`.

    A viewer who sees all of the client's leads reads the counts kept ahead by migration 0630
    (15-minute buckets: a few thousand rows instead of every delivery of the two months). A
    viewer scoped to assigned leads — or a zone whose midnights are off the 15-minute grid —
    counts the leads themselves."""
    bounds = [day_start(first + timedelta(days=i), zone) for i in range(days + 1)]
    p = Params()
    client, edges = p(viewer.client_id), p(bounds)
    since, until = p(bounds[0]), p(bounds[-1])
    if viewer.user_ids is None and all(on_count_grid(b) for b in bounds):
        source = (
            f"SELECT width_bucket(c.bucket, {edges}::timestamptz[]) AS i, sum(c.n)::bigint AS n"
            f" FROM portal_lead_counts c WHERE c.client_id = {client} AND c.bucket >= {since} AND c.bucket < {until}"
        )
    else:
        source = (
            f"SELECT width_bucket(pl.completed_at, {edges}::timestamptz[]) AS i, count(*) AS n"
            f" FROM portal_leads pl WHERE pl.client_id = {client}"
            f" AND pl.completed_at >= {since} AND pl.completed_at < {until} AND {_visible(viewer, p, 'pl')}"
        )
    rows = await conn.fetch(f"{source} GROUP BY 1", *p.values)
    return {first + timedelta(days=r["i"] - 1): r["n"] for r in rows if r["n"]}


def _appointment_visible(viewer: Viewer, p: Params) -> str:
    """Appointments follow the leads' rule: admins see all; others those assigned to their users."""
    if viewer.user_ids is None:
        return "TRUE"
    return f"ap.assigned_user_id = ANY({p(list(viewer.user_ids))}::uuid[])"


async def appointments_per_day(
    conn: asyncpg.Connection, viewer: Viewer, start: datetime, end: datetime, zone: str
) -> dict[date, int]:
    """Appointments made (created) per local day in [start, end), cancelled ones included: the
    report counts the work done that day."""
    p = Params()
    client, since, until, tz = p(viewer.client_id), p(start), p(end), p(zone)
    rows = await conn.fetch(
        f"SELECT (ap.created_at AT TIME ZONE {tz})::date AS day, count(*) AS n FROM appointments ap"
        f" WHERE ap.client_id = {client} AND ap.created_at >= {since} AND ap.created_at < {until}"
        f" AND {_appointment_visible(viewer, p)} GROUP BY 1",
        *p.values,
    )
    return {r["day"]: r["n"] for r in rows}


async def upcoming_appointments(
    conn: asyncpg.Connection, viewer: Viewer, now: datetime, limit: int
) -> list[asyncpg.Record]:
    p = Params()
    client, since = p(viewer.client_id), p(now)
    # The next few first (index on client, start time), then their leads and assignees.
    return await conn.fetch(
        "WITH next AS (SELECT ap.id, ap.lead_id, ap.title, ap.starts_at, ap.assigned_user_id FROM appointments ap"
        f" WHERE ap.client_id = {client} AND ap.status = 'scheduled' AND ap.starts_at >= {since}"
        f" AND {_appointment_visible(viewer, p)} ORDER BY ap.starts_at LIMIT {int(limit)})"
        " SELECT next.id, next.lead_id, next.title, next.starts_at, l.lead_type_id, l.fields,"
        " u.name AS assigned_name, u.email AS assigned_email"
        " FROM next JOIN leads l ON l.id = next.lead_id LEFT JOIN portal_users u ON u.id = next.assigned_user_id"
        " ORDER BY next.starts_at",
        *p.values,
    )


async def recent_leads(conn: asyncpg.Connection, viewer: Viewer, limit: int) -> list[asyncpg.Record]:
    p = Params()
    client = p(viewer.client_id)
    return await conn.fetch(
        "SELECT d.lead_id, d.completed_at, d.price, l.lead_type_id, l.fields"
        " FROM deliveries d JOIN leads l ON l.id = d.lead_id"
        f" WHERE d.client_id = {client} AND d.status = 'succeeded' AND {_visible(viewer, p)}"
        f" ORDER BY d.completed_at DESC, d.id DESC LIMIT {int(limit)}",
        *p.values,
    )


# --- Returns (D5, F1–F6) ---------------------------------------------------------------------------


async def return_basis(conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID) -> asyncpg.Record | None:
    """What a return of the lead is judged on, as the returns service reads it: the delivery that
    sold it to the client (account, time) and the order that paid for it (a confirmed charge),
    with that order's own Max Return %. None when the viewer may not see the lead."""
    p = Params()
    client, lead = p(viewer.client_id), p(lead_id)
    return await conn.fetchrow(
        "SELECT d.id AS delivery_id, d.delivery_account_id, d.completed_at, l.lead_type_id,"
        " c.order_id, o.spec->>'max_return_pct' AS order_return_pct"
        " FROM deliveries d JOIN leads l ON l.id = d.lead_id"
        " LEFT JOIN order_charges c ON c.delivery_id = d.id AND c.status = 'confirmed'"
        " LEFT JOIN orders o ON o.id = c.order_id"
        f" WHERE d.client_id = {client} AND d.lead_id = {lead} AND d.status = 'succeeded'"
        f" AND {_visible(viewer, p)}"
        " ORDER BY d.completed_at DESC LIMIT 1",
        *p.values,
    )


async def account_returns_month(
    conn: asyncpg.Connection, viewer: Viewer, account_id: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """(leads delivered, returns counted) for one of the client's delivery accounts over [start,
    end) of delivery time: the returns service's cap arithmetic (services/returns/store.py)."""
    p = Params()
    client, account, since, until = p(viewer.client_id), p(account_id), p(start), p(end)
    row = await conn.fetchrow(
        f"SELECT (SELECT count(*) FROM deliveries WHERE client_id = {client} AND delivery_account_id = {account}"
        f"        AND status = 'succeeded' AND completed_at >= {since} AND completed_at < {until}) AS delivered,"
        f"       (SELECT count(*) FROM returns WHERE client_id = {client} AND delivery_account_id = {account}"
        "        AND holds_lead AND status IN ('pending', 'approved')"
        f"        AND delivered_at >= {since} AND delivered_at < {until}) AS counted",
        *p.values,
    )
    return int(row["delivered"]), int(row["counted"])


async def order_returns_month(
    conn: asyncpg.Connection, viewer: Viewer, order_id: str, start: datetime, end: datetime
) -> tuple[int, int]:
    """(leads the order paid for, returns counted) over [start, end) of delivery time."""
    p = Params()
    client, order, since, until = p(viewer.client_id), p(order_id), p(start), p(end)
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM order_charges c JOIN deliveries d ON d.id = c.delivery_id"
        f"        WHERE c.order_id = {order} AND d.client_id = {client} AND c.status IN ('confirmed', 'credited')"
        f"        AND d.completed_at >= {since} AND d.completed_at < {until}) AS delivered,"
        f"       (SELECT count(*) FROM returns WHERE client_id = {client} AND order_id = {order} AND holds_lead"
        f"        AND status IN ('pending', 'approved') AND delivered_at >= {since} AND delivered_at < {until})"
        "        AS counted",
        *p.values,
    )
    return int(row["delivered"]), int(row["counted"])


RETURN_FIELDS = (
    "r.id, r.lead_id, r.reason, r.comment, r.status, r.decision_reason, r.note, r.credit, r.requested_at, r.decided_at"
)


async def return_of(
    conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID, return_id: uuid.UUID
) -> asyncpg.Record | None:
    """One return request of the viewer's client for a lead the viewer sees."""
    p = Params()
    client, lead, ident = p(viewer.client_id), p(lead_id), p(return_id)
    return await conn.fetchrow(
        f"SELECT {RETURN_FIELDS} FROM returns r WHERE r.id = {ident} AND r.client_id = {client}"
        f" AND r.lead_id = {lead} AND {_lead_visible(viewer, p, client, lead)}",
        *p.values,
    )


async def returns_page(conn: asyncpg.Connection, viewer: Viewer, f: ReturnsFilter, zone: str) -> list[asyncpg.Record]:
    """The Returns screen: the client's return requests of leads the viewer sees, newest first,
    RETURNS_PAGE_SIZE + 1 rows (the extra one says there is a next page), keyset-paged."""
    p = Params()
    start, end = f.bounds(zone)
    clauses = [f"r.client_id = {p(viewer.client_id)}"]
    if f.status:
        clauses.append(f"r.status = {p(f.status)}")
    if start is not None:
        clauses.append(f"r.requested_at >= {p(start)}")
    if end is not None:
        clauses.append(f"r.requested_at < {p(end)}")
    if f.after is not None:
        clauses.append(f"(r.requested_at, r.id) < ({p(f.after[0])}::timestamptz, {p(f.after[1])}::uuid)")
    clauses.append(_visible(viewer, p, "r"))
    return await conn.fetch(
        f"SELECT {RETURN_FIELDS}, l.lead_type_id, l.fields FROM returns r JOIN leads l ON l.id = r.lead_id"
        f" WHERE {' AND '.join(clauses)}"
        f" ORDER BY r.requested_at DESC, r.id DESC LIMIT {RETURNS_PAGE_SIZE + 1}",
        *p.values,
    )


# --- Order Manager (G1–G14) ------------------------------------------------------------------------


async def orders_of(conn: asyncpg.Connection, viewer: Viewer) -> list[OrderFiguresView]:
    """The client's orders with their figures (shared.orders, always scoped to the client). Every
    user of the client sees them; only admins act on them."""
    return await order_figures(conn, client_id=viewer.client_id)


# --- Files (D6) ------------------------------------------------------------------------------------

FILE_FIELDS = (
    "f.id, f.lead_id, f.name, f.content_type, f.size, f.sha256, f.uploaded_by, f.created_at,"
    " u.name AS uploader_name, u.email AS uploader_email"
)


async def files_of(conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID) -> list[asyncpg.Record]:
    """A lead's files, oldest first — nothing unless the viewer sees the lead."""
    p = Params()
    client, lead = p(viewer.client_id), p(lead_id)
    return await conn.fetch(
        f"SELECT {FILE_FIELDS} FROM lead_files f JOIN portal_users u ON u.id = f.uploaded_by"
        f" WHERE f.client_id = {client} AND f.lead_id = {lead} AND {_lead_visible(viewer, p, client, lead)}"
        " ORDER BY f.created_at, f.id",
        *p.values,
    )


async def file_of(
    conn: asyncpg.Connection, viewer: Viewer, lead_id: uuid.UUID, file_id: uuid.UUID
) -> asyncpg.Record | None:
    p = Params()
    client, lead, ident = p(viewer.client_id), p(lead_id), p(file_id)
    return await conn.fetchrow(
        f"SELECT {FILE_FIELDS} FROM lead_files f JOIN portal_users u ON u.id = f.uploaded_by"
        f" WHERE f.id = {ident} AND f.client_id = {client} AND f.lead_id = {lead}"
        f" AND {_lead_visible(viewer, p, client, lead)}",
        *p.values,
    )


async def file_chunk(conn: asyncpg.Connection, viewer: Viewer, file_id: uuid.UUID, seq: int) -> bytes | None:
    """One stored chunk of a file of the viewer's client (the caller checked the lead with file_of)."""
    p = Params()
    return await conn.fetchval(
        "SELECT c.data FROM lead_file_chunks c JOIN lead_files f ON f.id = c.file_id"
        f" WHERE c.file_id = {p(file_id)} AND c.seq = {p(seq)} AND f.client_id = {p(viewer.client_id)}",
        *p.values,
    )
