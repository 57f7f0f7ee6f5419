"""Catalog SQL: apply a validated catalog atomically, export it, load the latest version."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from shared.catalog.loader import CatalogError, CatalogInvalid
from shared.catalog.model import Catalog

NOTIFY_CHANNEL = "leadwire_catalog"


def _document(catalog: Catalog) -> dict[str, Any]:
    return catalog.model_dump(mode="json")


def digest(catalog: Catalog) -> str:
    return hashlib.sha256(json.dumps(_document(catalog), sort_keys=True).encode()).hexdigest()


class CatalogConflict(Exception):
    """The catalog changed since the version an editor started from (optimistic concurrency)."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"the catalog is at version {current}, not {expected}")
        self.expected = expected
        self.current = current


async def apply_catalog(
    conn: asyncpg.Connection,
    catalog: Catalog,
    *,
    expected_version: int | None = None,
    applied_by: str | None = None,
) -> int | None:
    """Store `catalog` as the new version, all or nothing. Returns the new version number, or
    None when the catalog is identical to the current one (nothing to do). With
    `expected_version` (an editor's starting point: the admin console), raises CatalogConflict
    when another apply came first; the check is made under the apply lock. `applied_by` is kept
    with the version (default: the database user)."""
    doc = _document(catalog)
    doc_digest = digest(catalog)
    async with conn.transaction():
        # One apply at a time: concurrent applies would otherwise interleave their projections.
        await conn.execute("LOCK TABLE catalog_versions IN EXCLUSIVE MODE")
        current = await conn.fetchrow(
            "SELECT version, digest, document FROM catalog_versions ORDER BY version DESC LIMIT 1"
        )
        if expected_version is not None and (current["version"] if current else 0) != expected_version:
            raise CatalogConflict(expected_version, current["version"] if current else 0)
        if current is not None and current["digest"] == doc_digest:
            return None
        # An order's live status (paused in the portal, closed when filled) is the truth; the file
        # changes it only when the file itself changed that order's status since the last apply.
        applied_status = {o["id"]: o["status"] for o in (current["document"].get("orders", []) if current else [])}

        # Orders are money records: one that is no longer in the file stays, so its client must too.
        file_clients = {c.id for c in catalog.clients}
        file_orders = {o.id for o in catalog.orders}
        kept = await conn.fetch("SELECT id, client_id FROM orders WHERE NOT (id = ANY($1::text[]))", list(file_orders))
        errors = [
            CatalogError(
                f"clients ({r['client_id']})",
                None,
                f"cannot remove client {r['client_id']!r}: order {r['id']!r} in the database belongs to it",
            )
            for r in kept
            if r["client_id"] not in file_clients
        ]
        if errors:
            raise CatalogInvalid(errors)

        version = await conn.fetchval(
            "INSERT INTO catalog_versions (digest, document, applied_by) VALUES ($1, $2, coalesce($3, current_user))"
            " RETURNING version",
            doc_digest,
            doc,
            applied_by,
        )
        await conn.execute("DELETE FROM delivery_accounts")
        await conn.execute("DELETE FROM client_groups")
        await conn.execute("DELETE FROM lead_sources")
        await conn.executemany(
            "INSERT INTO lead_types (id, name, spec) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, spec = excluded.spec",
            [(t.id, t.name, t.model_dump(mode="json")) for t in catalog.lead_types],
        )
        await conn.executemany(
            "INSERT INTO lead_sources (id, name, active, spec) VALUES ($1, $2, $3, $4)",
            [(s.id, s.name, s.active, s.model_dump(mode="json")) for s in catalog.sources],
        )
        await conn.executemany(
            "INSERT INTO clients (id, name, active, time_zone, email, external_ref, spec)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, active = excluded.active,"
            " time_zone = excluded.time_zone, email = excluded.email,"
            " external_ref = excluded.external_ref, spec = excluded.spec",
            [
                (c.id, c.name, c.active, c.time_zone, c.email, c.external_ref, c.model_dump(mode="json"))
                for c in catalog.clients
            ],
        )
        await conn.executemany(
            "INSERT INTO client_groups (id, name, position, spec) VALUES ($1, $2, $3, $4)",
            [(g.id, g.name, i, g.model_dump(mode="json")) for i, g in enumerate(catalog.groups)],
        )
        await conn.executemany(
            "INSERT INTO delivery_accounts (id, client_id, lead_type_id, active, price, spec)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (a.id, a.client, a.lead_type, a.active, a.price, a.model_dump(mode="json"))
                for a in catalog.delivery_accounts
            ],
        )
        # An apply sets an order's definition; its live figures (received, cost, paid) stay.
        await conn.executemany(
            "INSERT INTO orders (id, client_id, order_type, total, status, start_date, end_date,"
            " renewal, auto_charge, spec) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (id) DO UPDATE SET client_id = excluded.client_id,"
            " order_type = excluded.order_type, total = excluded.total,"
            " status = CASE WHEN $11 THEN excluded.status ELSE orders.status END,"
            " start_date = excluded.start_date, end_date = excluded.end_date,"
            " renewal = excluded.renewal, auto_charge = excluded.auto_charge, spec = excluded.spec",
            [
                (
                    o.id,
                    o.client,
                    o.type,
                    o.total,
                    o.status,
                    o.start_date,
                    o.end_date,
                    o.renewal,
                    o.auto_charge,
                    o.model_dump(mode="json"),
                    applied_status.get(o.id) != o.status,
                )
                for o in catalog.orders
            ],
        )
        await conn.execute("DELETE FROM clients c WHERE NOT (c.id = ANY($1::text[]))", list(file_clients))
        await conn.execute(
            "DELETE FROM lead_types t WHERE NOT (t.id = ANY($1::text[]))", [t.id for t in catalog.lead_types]
        )
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(version))
    return version


async def current_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return await conn.fetchval("SELECT coalesce(max(version), 0) FROM catalog_versions")


async def load_latest(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, Catalog]:
    row = await conn.fetchrow("SELECT version, document FROM catalog_versions ORDER BY version DESC LIMIT 1")
    if row is None:
        return 0, Catalog()
    return row["version"], Catalog.model_validate(row["document"])


async def export_catalog(conn: asyncpg.Connection) -> Catalog:
    """The current catalog, with orders as they stand now (status may have changed since the
    apply, e.g. paused in the portal or closed when filled)."""
    _, catalog = await load_latest(conn)
    live = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM orders")}
    orders = tuple(o.model_copy(update={"status": live.get(o.id, o.status)}) for o in catalog.orders)
    return catalog.model_copy(update={"orders": orders})
