"""Helpers for delivery tests: a catalog of buyer accounts, seeded deliveries, and an idempotent
buyer (publish_event, to the events exchange, comes from tests/support.py)."""

from __future__ import annotations

import json
import threading
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import yaml

from harness.buyer import FakeBuyer, ReceivedRequest
from shared.contracts import DeliveryRequested

FIELDS = {"first_name": "Ada", "phone": "4155550100", "state": "CA"}


def account(
    account_id: str,
    client: str,
    buyer: FakeBuyer | None,
    *,
    amount: str = "25.00",
    priority: int = 0,
    **delivery: Any,
) -> dict[str, Any]:
    """A delivery account; `delivery` holds the delivery settings (`price` there is the buyer's
    price rule, `amount` the account's price)."""
    if buyer is None:
        spec = delivery
    else:
        spec = {
            "method": "http",
            "url": buyer.url(f"/{account_id}"),
            "timeout_seconds": 5,
            "retry": {"count": 0, "delay_seconds": 1},
            **delivery,
        }
    return {
        "id": account_id,
        "client": client,
        "lead_type": "solar",
        "price": amount,
        "priority": priority,
        "delivery": spec,
    }


def catalog(*accounts: dict[str, Any], clients: list[dict[str, Any]] | None = None, **extra: Any) -> str:
    client_ids = sorted({a["client"] for a in accounts})
    doc: dict[str, Any] = {
        "lead_types": [
            {
                "id": "solar",
                "name": "Solar",
                "fields": [
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                    {"name": "state", "type": "us_state", "required": True},
                ],
            }
        ],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": clients or [{"id": c, "name": c.title()} for c in client_ids],
        "delivery_accounts": list(accounts),
        **extra,
    }
    return yaml.safe_dump(doc)


async def seed_delivery(
    conn: asyncpg.Connection,
    account_id: str,
    client_id: str,
    *,
    price: str = "25.00",
    status: str = "requested",
    attempts: int = 0,
    lease_seconds: float | None = None,
    fields: dict[str, Any] | None = None,
) -> DeliveryRequested:
    """A lead and one delivery row, as router would have stored them; returns the request."""
    lead_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status)"
        " VALUES ($1, 'web', $2, 'solar', $3, 'routing')",
        lead_id,
        str(lead_id),
        fields or FIELDS,
    )
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status, attempts, lease_until)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))",
        delivery_id,
        lead_id,
        client_id,
        account_id,
        Decimal(price),
        status,
        attempts,
        lease_seconds,
    )
    return DeliveryRequested(
        delivery_id=delivery_id,
        lead_id=lead_id,
        lead_type="solar",
        client_id=client_id,
        delivery_account_id=account_id,
        price=Decimal(price),
        fields=fields or FIELDS,
    )


class IdempotentBuyer:
    """A buyer that honours Idempotency-Key: the first post with a key is a sale, a repeat is
    answered the same way without a second sale. Optionally slow on the first post of each key
    (it still records that sale: a late success)."""

    def __init__(self, first_delay: float = 0.0) -> None:
        self.first_delay = first_delay
        self.sales: dict[str, int] = {}
        self.repeats = 0
        self._lock = threading.Lock()

    def __call__(self, request: ReceivedRequest) -> tuple[int, str, float]:
        key = request.headers.get("Idempotency-Key", "")
        with self._lock:
            first = key not in self.sales
            if first:
                self.sales[key] = len(self.sales) + 1
            else:
                self.repeats += 1
        body = json.dumps({"status": "accepted", "sale": self.sales[key], "repeat": not first})
        return 200, body, self.first_delay if first else 0.0
