"""The buyer API's reads and its one table: every function takes the client first and filters by
it in the SQL itself, so one client can never see or touch another's lead by a forgotten WHERE.

A lead is a client's when one of its deliveries to that client succeeded (`deliveries.status =
'succeeded'`); it is listed at that delivery's completion time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared import sql
from shared.sql import statement

_DELIVERED = (
    "SELECT DISTINCT ON (d.lead_id) d.id AS delivery_id, d.lead_id, d.price, d.completed_at, l.lead_type_id,"
    " l.fields, b.disposition, b.note AS disposition_note, b.updated_at AS disposition_at,"
    " (SELECT r.status FROM returns r WHERE r.client_id = d.client_id AND r.lead_id = d.lead_id"
    "  ORDER BY r.requested_at DESC LIMIT 1) AS return_status"
    " FROM deliveries d JOIN leads l ON l.id = d.lead_id"
    " LEFT JOIN buyer_lead_dispositions b ON b.client_id = d.client_id AND b.lead_id = d.lead_id"
    " WHERE d.client_id = :client_id AND d.status = 'succeeded'"
)


@dataclass(frozen=True)
class DeliveredLead:
    lead_id: uuid.UUID
    delivery_id: uuid.UUID
    lead_type: str
    delivered_at: datetime
    price: Decimal
    fields: dict[str, Any]
    disposition: str | None
    disposition_note: str | None
    return_status: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "lead_id": str(self.lead_id),
            "delivery_id": str(self.delivery_id),
            "lead_type": self.lead_type,
            "delivered_at": self.delivered_at.isoformat(),
            "price": format(self.price, "f"),
            "fields": self.fields,
            "disposition": self.disposition,
            "disposition_note": self.disposition_note,
            "return_status": self.return_status,
        }


def _lead(row: asyncpg.Record) -> DeliveredLead:
    return DeliveredLead(
        lead_id=row["lead_id"],
        delivery_id=row["delivery_id"],
        lead_type=row["lead_type_id"],
        delivered_at=row["completed_at"],
        price=row["price"],
        fields=dict(row["fields"] or {}),
        disposition=row["disposition"],
        disposition_note=row["disposition_note"],
        return_status=row["return_status"],
    )


async def delivered_lead(
    conn: asyncpg.Connection | asyncpg.Pool, client_id: str, lead_id: uuid.UUID
) -> DeliveredLead | None:
    row = await sql.fetchrow(
        conn,
        statement(
            _DELIVERED + " AND d.lead_id = :lead_id ORDER BY d.lead_id, d.completed_at DESC",
            client_id=client_id,
            lead_id=lead_id,
        ),
    )
    return _lead(row) if row is not None else None


@dataclass(frozen=True)
class LeadFilter:
    since: datetime | None = None
    until: datetime | None = None
    lead_type: str | None = None
    disposition: str | None = None  # "none": leads without one
    after: tuple[datetime, uuid.UUID] | None = None  # the cursor: (delivered_at, delivery_id) of the last seen
    limit: int = 50


async def delivered_leads(
    conn: asyncpg.Connection | asyncpg.Pool, client_id: str, f: LeadFilter
) -> list[DeliveredLead]:
    """The client's delivered leads, newest first, filtered; one page of `limit`."""
    rows = await sql.fetch(
        conn,
        statement(
            "SELECT * FROM (" + _DELIVERED + " ORDER BY d.lead_id, d.completed_at DESC) x"
            " WHERE (:since::timestamptz IS NULL OR x.completed_at >= :since)"
            " AND (:until::timestamptz IS NULL OR x.completed_at < :until)"
            " AND (:lead_type::text IS NULL OR x.lead_type_id = :lead_type)"
            " AND (:disposition::text IS NULL OR (:disposition = 'none' AND x.disposition IS NULL)"
            "      OR x.disposition = :disposition)"
            " AND (:after_at::timestamptz IS NULL OR (x.completed_at, x.delivery_id) < (:after_at, :after_id::uuid))"
            " ORDER BY x.completed_at DESC, x.delivery_id DESC LIMIT :limit",
            client_id=client_id,
            since=f.since,
            until=f.until,
            lead_type=f.lead_type,
            disposition=f.disposition,
            after_at=f.after[0] if f.after else None,
            after_id=f.after[1] if f.after else None,
            limit=f.limit,
        ),
    )
    return [_lead(r) for r in rows]
