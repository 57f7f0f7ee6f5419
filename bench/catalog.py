"""The benchmark catalog: `clients` buyers (one delivery account each) in five groups of equal
size, served in this order:

1. exclusive, priority      each account takes one state (two accounts per state, half the states)
2. exclusive, round robin   homeowners only
3. shared                   monthly bill at least $50-$140 (a different floor per account)
4. shared                   half the states
5. exclusive, weighted      everything (the catch-all), weights 1..n

The lead type sells each lead at most twice (max_sales 2), so a typical lead is posted twice:
once in the first group that has an eligible account, once in the next. Caps are set far above
what a run can reach, so they are checked and counted on every lead but never bind.
"""

from __future__ import annotations

from typing import Any

import yaml

from bench.load import STATES

GROUP_SHAPES = (
    ("exclusive-priority", True, "priority"),
    ("exclusive-round-robin", True, "round_robin"),
    ("shared-by-bill", False, "priority"),
    ("shared-by-state", False, "priority"),
    ("exclusive-weighted", True, "weighted"),
)


def client_id(i: int) -> str:
    return f"buyer{i:02d}"


def build(buyer_url: str, clients: int = 50, caps: bool = True) -> dict[str, Any]:
    per_group = max(1, clients // len(GROUP_SHAPES))
    doc: dict[str, Any] = {
        "options": {"route_duplicate_leads": False},
        "lead_types": [
            {
                "id": "solar",
                "name": "Residential solar",
                "duplicate_fields": ["phone"],
                "duplicate_window_days": 30,
                "max_sales": 2,
                "fields": [
                    {"name": "ref", "type": "text"},
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                    {"name": "email", "type": "email"},
                    {"name": "state", "type": "us_state", "required": True},
                    {"name": "homeowner", "type": "choice", "choices": ["yes", "no"], "required": True},
                    {"name": "monthly_bill", "type": "money"},
                ],
            }
        ],
        "sources": [{"id": "web", "name": "Web forms"}],
        "clients": [],
        "groups": [],
        "delivery_accounts": [],
    }
    n = 0
    for g, (group_id, exclusive, distribution) in enumerate(GROUP_SHAPES):
        members = []
        for k in range(per_group):
            cid = client_id(n)
            members.append(cid)
            doc["clients"].append(
                {"id": cid, "name": f"Buyer {n:02d}", "external_ref": f"B{n:02d}", "time_zone": "America/New_York"}
            )
            criteria: list[dict[str, Any]] = []
            if g == 0:
                criteria = [{"field": "state", "op": "in", "value": [STATES[k % 5]]}]
            elif g == 1:
                criteria = [{"field": "homeowner", "op": "equals", "value": "yes"}]
            elif g == 2:
                criteria = [{"field": "monthly_bill", "op": "range", "min": 50 + 10 * k}]
            elif g == 3:
                criteria = [{"field": "state", "op": "in", "value": list(STATES[k % 2 :: 2])}]
            doc["delivery_accounts"].append(
                {
                    "id": f"{cid}-solar",
                    "client": cid,
                    "lead_type": "solar",
                    "price": f"{20 + n % 17}.00",
                    "priority": k,
                    "weight": k + 1,
                    "criteria": criteria,
                    "caps": {"hourly": 10_000_000, "daily": 10_000_000} if caps else {},
                    "delivery": {
                        "method": "http",
                        "url": f"{buyer_url}/buyers/{cid}",
                        "format": "json",
                        "timeout_seconds": 10,
                        "retry": {"count": 1, "delay_seconds": 1},
                        "success": {"status_codes": [200], "json_path": "status", "json_equals": "accepted"},
                    },
                }
            )
            n += 1
        doc["groups"].append(
            {
                "id": group_id,
                "name": group_id,
                "apply_groups_as_criteria": exclusive,
                "distribution": distribution,
                "clients": members,
            }
        )
    return doc


def build_yaml(buyer_url: str, clients: int = 50, caps: bool = True) -> str:
    return yaml.safe_dump(build(buyer_url, clients, caps), sort_keys=False)


# The buyer made slow in the isolation measurement: a member of the round-robin group, so it is
# offered about a tenth of the homeowner leads and its slowness cannot be routed around.
def slow_client(clients: int = 50) -> str:
    per_group = max(1, clients // len(GROUP_SHAPES))
    return client_id(per_group + 2)
