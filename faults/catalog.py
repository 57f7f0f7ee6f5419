"""The fault run's catalog and the limits in it, which the invariants check (faults/invariants.py)."""

from __future__ import annotations

from typing import Any

import yaml

from faults.endpoints import FlakyBuyer

RETURN_PCT = 20
CAP = 25  # daily cap of the capped accounts
ORDER_TOTAL = 20  # leads in the lead-quantity order
ORDER_DOLLARS = "150.00"
BUYER_TIMEOUT = 1.0  # seconds; the flaky buyer hangs past it


def fault_catalog(buyer: FlakyBuyer) -> str:
    def account(id: str, client: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": id,
            "client": client,
            "lead_type": "solar",
            "price": "10.00",
            "delivery": {
                "method": "http",
                "url": buyer.url(f"/{id}"),
                "timeout_seconds": BUYER_TIMEOUT,
                "retry": {"count": 4, "delay_seconds": 1},
            },
            **extra,
        }

    return yaml.safe_dump(
        {
            "options": {
                # On, so that the run exercises Route Duplicate Leads under refusals and re-offers.
                "route_duplicate_leads": True,
                "default_return_pct_delivery_accounts": RETURN_PCT,
                "default_return_pct_orders": RETURN_PCT,
            },
            "lead_types": [
                {
                    "id": "solar",
                    "name": "Solar",
                    "duplicate_fields": ["phone"],
                    "max_sales": 2,
                    "return_reasons": ["wrong_number", "out_of_area"],
                    "return_window_days": 14,
                    "fields": [
                        {"name": "first_name", "type": "text", "required": True},
                        {"name": "phone", "type": "phone", "required": True},
                    ],
                }
            ],
            "sources": [{"id": "web", "name": "Web"}],
            "clients": [{"id": c, "name": c.upper(), "auto_approve_returns": c in "ad"} for c in "abcde"],
            "groups": [
                {
                    "id": "exclusive",
                    "name": "Exclusive",
                    "apply_groups_as_criteria": True,
                    "distribution": "round_robin",
                    "clients": ["a", "b", "c"],
                },
                {"id": "shared", "name": "Shared", "apply_groups_as_criteria": False, "clients": ["d", "e"]},
            ],
            "delivery_accounts": [
                account("a1", "a", caps={"daily": CAP}),
                account("b1", "b"),
                account("c1", "c", require_order=True),
                account("d1", "d", caps={"daily": CAP}),
                account("e1", "e", require_order=True),
            ],
            "orders": [
                {
                    "id": "c-order",
                    "client": "c",
                    "type": "lead_quantity",
                    "total": ORDER_TOTAL,
                    "start_date": "2020-01-01",
                },
                {
                    "id": "e-order",
                    "client": "e",
                    "type": "dollar_amount",
                    "total": ORDER_DOLLARS,
                    "start_date": "2020-01-01",
                },
            ],
        }
    )
