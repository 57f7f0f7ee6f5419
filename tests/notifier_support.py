"""Helpers for notifier tests: settings that point at the SMTP sink, and rows notifier reads from
other services' tables. The SMTP sink comes from the harness (harness/smtp.py), the events
publisher from tests/support.py; both are re-exported here for the notifier tests."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from harness.smtp import ReceivedEmail as ReceivedEmail  # re-exported for the notifier tests
from harness.smtp import SmtpSink as SmtpSink
from harness.smtp import free_port as free_port
from shared.settings import Settings
from tests.support import publish_event as publish_event


def with_smtp(settings: Settings, port: int, **extra: Any) -> Settings:
    return settings.model_copy(
        update={"smtp_port": port, "smtp_from": "leadwire@mail.example.com", "admin_email": "ops@example.com", **extra}
    )


async def add_portal_user(
    conn: asyncpg.Connection,
    client_id: str,
    email_address: str,
    *,
    name: str = "",
    enabled: bool = True,
    notify_new_leads: bool = False,
    is_admin: bool = False,
) -> uuid.UUID:
    user_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO portal_users (id, client_id, email, name, enabled, notify_new_leads, is_admin)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        user_id,
        client_id,
        email_address,
        name,
        enabled,
        notify_new_leads,
        is_admin,
    )
    return user_id


async def add_sold_lead(
    conn: asyncpg.Connection, client_id: str, fields: dict[str, Any], lead_type: str = "solar"
) -> tuple[uuid.UUID, uuid.UUID]:
    """A lead router sold to `client_id`: (lead id, delivery id)."""
    lead_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status)"
        " VALUES ($1, 'web', $2, $3, $4, 'sold')",
        lead_id,
        str(lead_id),
        lead_type,
        fields,
    )
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status)"
        " VALUES ($1, $2, $3, $4, 25, 'succeeded')",
        delivery_id,
        lead_id,
        client_id,
        f"{client_id}-post",
    )
    return lead_id, delivery_id
