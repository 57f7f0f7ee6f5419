"""Helpers for the returns and orders tests: a catalog with orders, and sold leads in the
database as router and delivery leave them."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import yaml

from shared import orders
from shared.catalog.model import Catalog
from shared.catalog.store import load_latest


def returns_catalog(
    *,
    orders_: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    client: dict[str, Any] | None = None,
    account: dict[str, Any] | None = None,
    lead_type: dict[str, Any] | None = None,
) -> str:
    doc: dict[str, Any] = {
        "options": options or {},
        "lead_types": [
            {
                "id": "solar",
                "name": "Solar",
                "return_reasons": ["bad phone", "out of area"],
                "return_window_days": 30,
                "fields": [
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                ],
                **(lead_type or {}),
            }
        ],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": [
            {
                "id": "acme",
                "name": "Acme",
                "time_zone": "America/New_York",
                "email": "buyer@acme.example",
                **(client or {}),
            },
            {"id": "bolt", "name": "Bolt"},
        ],
        "delivery_accounts": [
            {
                "id": "acme-post",
                "client": "acme",
                "lead_type": "solar",
                "price": "25.00",
                "delivery": {"method": "email", "to": ["leads@acme.example"]},
                **(account or {}),
            },
            {
                "id": "acme-other",
                "client": "acme",
                "lead_type": "solar",
                "price": "30.00",
                "delivery": {"method": "email", "to": ["leads@acme.example"]},
            },
            {
                "id": "bolt-post",
                "client": "bolt",
                "lead_type": "solar",
                "price": "20.00",
                "delivery": {"method": "email", "to": ["leads@bolt.example"]},
            },
        ],
        "orders": orders_ or [],
    }
    return yaml.safe_dump(doc)


async def catalog_of(conn: asyncpg.Connection) -> Catalog:
    return (await load_latest(conn))[1]


async def sell(
    conn: asyncpg.Connection,
    *,
    client_id: str = "acme",
    account_id: str = "acme-post",
    price: Decimal = Decimal("25.00"),
    at: datetime,
    count: int = 1,
    catalog: Catalog | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Record `count` leads sold at `at` (as router and delivery would), charging an order when
    `catalog` is given and one covers the account. Returns [(lead_id, delivery_id)]."""
    sold = []
    for _ in range(count):
        lead_id, delivery_id = uuid.uuid4(), uuid.uuid4()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status, received_at,"
                " decided_at) VALUES ($1, 'web', $2, 'solar', $3, 'sold', $4, $4)",
                lead_id,
                str(lead_id),
                {"first_name": "Ada", "phone": "4155550100"},
                at,
            )
            await conn.execute(
                "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status, attempts,"
                " created_at, completed_at) VALUES ($1, $2, $3, $4, $5, 'succeeded', 1, $6, $6)",
                delivery_id,
                lead_id,
                client_id,
                account_id,
                price,
                at,
            )
            if catalog is not None:
                account = catalog.accounts_by_id[account_id]
                if await orders.reserve(
                    conn, catalog=catalog, account=account, delivery_id=delivery_id, price=price, now=at
                ):
                    await orders.settle(
                        conn,
                        delivery_id=delivery_id,
                        succeeded=True,
                        final_price=price,
                        now=at,
                        notify_to=["admin@example.com"],
                    )
        sold.append((lead_id, delivery_id))
    return sold


async def order_row(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT status, total, received, reserved, cost, amount_paid, period, period_start, period_end,"
        " closed_reason FROM orders WHERE id = $1",
        order_id,
    )


async def outbox_keys(conn: asyncpg.Connection) -> list[str]:
    return [r["routing_key"] for r in await conn.fetch("SELECT routing_key FROM outbox ORDER BY created_at")]
