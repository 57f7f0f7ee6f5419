"""Returns SQL (order SQL lives in shared/orders.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

RETURN_COLUMNS = (
    "id, client_id, lead_id, delivery_id, delivery_account_id, order_id, reason, comment, status,"
    " decision_reason, note, requested_by, decided_by, holds_lead, credit, delivered_at, requested_at, decided_at"
)


@dataclass(frozen=True)
class ReturnRecord:
    """A return request as stored (RETURN_COLUMNS)."""

    return_id: uuid.UUID
    client_id: str
    lead_id: uuid.UUID
    delivery_id: uuid.UUID | None
    delivery_account_id: str | None
    order_id: str | None
    reason: str
    comment: str | None
    status: str  # pending | approved | denied
    decision_reason: str | None
    note: str | None
    requested_by: str | None
    decided_by: str | None
    holds_lead: bool
    credit: Decimal | None
    delivered_at: datetime | None
    requested_at: datetime
    decided_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ReturnRecord:
        return cls(
            return_id=row["id"],
            client_id=row["client_id"],
            lead_id=row["lead_id"],
            delivery_id=row["delivery_id"],
            delivery_account_id=row["delivery_account_id"],
            order_id=row["order_id"],
            reason=row["reason"],
            comment=row["comment"],
            status=row["status"],
            decision_reason=row["decision_reason"],
            note=row["note"],
            requested_by=row["requested_by"],
            decided_by=row["decided_by"],
            holds_lead=row["holds_lead"],
            credit=row["credit"],
            delivered_at=row["delivered_at"],
            requested_at=row["requested_at"],
            decided_at=row["decided_at"],
        )


@dataclass(frozen=True)
class DeliveredLead:
    """The delivery that sold a lead to a client."""

    delivery_id: uuid.UUID
    account_id: str
    price: Decimal
    completed_at: datetime
    lead_type_id: str


async def lock_client(conn: asyncpg.Connection, client_id: str) -> None:
    """Serialise one client's return requests across every replica until commit: the caps count
    that client's returns, so two requests checked side by side could both take the last slot."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"returns:{client_id}")


async def find_return(conn: asyncpg.Connection, return_id: uuid.UUID, *, lock: bool = False) -> ReturnRecord | None:
    row = await conn.fetchrow(
        f"SELECT {RETURN_COLUMNS} FROM returns WHERE id = $1" + (" FOR UPDATE" if lock else ""), return_id
    )
    return ReturnRecord.from_row(row) if row is not None else None


async def delivered_lead(conn: asyncpg.Connection, client_id: str, lead_id: uuid.UUID) -> DeliveredLead | None:
    """The delivery that sold `lead_id` to `client_id`, if any."""
    row = await conn.fetchrow(
        "SELECT d.id, d.delivery_account_id, d.price, d.completed_at, l.lead_type_id"
        " FROM deliveries d JOIN leads l ON l.id = d.lead_id"
        " WHERE d.lead_id = $1 AND d.client_id = $2 AND d.status = 'succeeded'"
        " ORDER BY d.completed_at DESC LIMIT 1",
        lead_id,
        client_id,
    )
    if row is None:
        return None
    return DeliveredLead(row["id"], row["delivery_account_id"], row["price"], row["completed_at"], row["lead_type_id"])


async def lead_is_held(conn: asyncpg.Connection, client_id: str, lead_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM returns WHERE client_id = $1 AND lead_id = $2 AND holds_lead", client_id, lead_id
        )
    )


async def account_month(conn: asyncpg.Connection, account_id: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(leads delivered, returns counted) for a delivery account in [start, end) of delivery time."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM deliveries WHERE delivery_account_id = $1 AND status = 'succeeded'"
        "        AND completed_at >= $2 AND completed_at < $3) AS delivered,"
        "       (SELECT count(*) FROM returns WHERE delivery_account_id = $1 AND holds_lead"
        "        AND status IN ('pending', 'approved') AND delivered_at >= $2 AND delivered_at < $3) AS counted",
        account_id,
        start,
        end,
    )
    return row["delivered"], row["counted"]


async def order_month(conn: asyncpg.Connection, order_id: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(leads the order paid for, returns counted) in [start, end) of delivery time."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM order_charges c JOIN deliveries d ON d.id = c.delivery_id"
        "        WHERE c.order_id = $1 AND c.status IN ('confirmed', 'credited')"
        "        AND d.completed_at >= $2 AND d.completed_at < $3) AS delivered,"
        "       (SELECT count(*) FROM returns WHERE order_id = $1 AND holds_lead"
        "        AND status IN ('pending', 'approved') AND delivered_at >= $2 AND delivered_at < $3) AS counted",
        order_id,
        start,
        end,
    )
    return row["delivered"], row["counted"]


async def order_return_pct(conn: asyncpg.Connection, order_id: str) -> str | None:
    return await conn.fetchval("SELECT spec->>'max_return_pct' FROM orders WHERE id = $1", order_id)


async def client_time_zone(conn: asyncpg.Connection, client_id: str) -> str:
    return await conn.fetchval("SELECT time_zone FROM clients WHERE id = $1", client_id) or "UTC"


async def insert_return(
    conn: asyncpg.Connection,
    *,
    return_id: uuid.UUID,
    client_id: str,
    lead_id: uuid.UUID,
    delivery_id: uuid.UUID | None,
    delivery_account_id: str | None,
    order_id: str | None,
    reason: str,
    comment: str | None,
    status: str,
    decision_reason: str | None,
    note: str | None,
    requested_by: str | None,
    holds_lead: bool,
    delivered_at: datetime | None,
    now: datetime,
) -> bool:
    """False when this return id exists already (a repeated request)."""
    return bool(
        await conn.fetchval(
            "INSERT INTO returns (id, client_id, lead_id, delivery_id, delivery_account_id, order_id, reason, comment,"
            " status, decision_reason, note, requested_by, holds_lead, delivered_at, requested_at, decided_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            " ON CONFLICT (id) DO NOTHING RETURNING true",
            return_id,
            client_id,
            lead_id,
            delivery_id,
            delivery_account_id,
            order_id,
            reason,
            comment,
            status,
            decision_reason,
            note,
            requested_by,
            holds_lead,
            delivered_at,
            now,
            None if status == "pending" else now,
        )
    )


async def decide(
    conn: asyncpg.Connection,
    return_id: uuid.UUID,
    *,
    status: str,
    decision_reason: str,
    note: str | None,
    decided_by: str | None,
    credit: Decimal,
    now: datetime,
) -> None:
    await conn.execute(
        "UPDATE returns SET status = $2, decision_reason = $3, note = $4, decided_by = $5, credit = $6,"
        " decided_at = $7 WHERE id = $1",
        return_id,
        status,
        decision_reason,
        note,
        decided_by,
        credit,
        now,
    )


async def set_credit(conn: asyncpg.Connection, return_id: uuid.UUID, credit: Decimal) -> None:
    await conn.execute("UPDATE returns SET credit = $2 WHERE id = $1", return_id, credit)


async def delivery_price(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> Decimal:
    return await conn.fetchval("SELECT price FROM deliveries WHERE id = $1", delivery_id)


async def credit_balance(conn: asyncpg.Connection, client_id: str, amount: Decimal, return_id: uuid.UUID) -> bool:
    """Add a return's credit to the client's balance, once per return."""
    if not await conn.fetchval(
        "INSERT INTO client_balance_entries (client_id, amount, kind, return_id) VALUES ($1, $2, 'return_credit', $3)"
        " ON CONFLICT (return_id) DO NOTHING RETURNING true",
        client_id,
        amount,
        return_id,
    ):
        return False
    await conn.execute(
        "INSERT INTO client_balances (client_id, balance) VALUES ($1, $2)"
        " ON CONFLICT (client_id) DO UPDATE SET balance = client_balances.balance + excluded.balance,"
        " updated_at = now()",
        client_id,
        amount,
    )
    return True


async def list_returns(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    client_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[ReturnRecord]:
    """Newest first; pass client_id for anything a client sees."""
    rows = await conn.fetch(
        f"SELECT {RETURN_COLUMNS} FROM returns WHERE ($1::text IS NULL OR client_id = $1)"
        " AND ($2::text IS NULL OR status = $2) ORDER BY requested_at DESC LIMIT $3",
        client_id,
        status,
        limit,
    )
    return [ReturnRecord.from_row(r) for r in rows]
