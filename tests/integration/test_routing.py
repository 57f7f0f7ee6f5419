"""Each routing rule and Client Option, on and off, through the real router and delivery services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import yaml

from services.delivery.main import build as build_delivery
from services.router.main import build as build_router
from shared.service import Runtime
from tests.support import EventTap, apply_yaml, lead_body, new_key, publish_raw, wait_for

pytestmark = pytest.mark.integration


def account(buyer, id: str, client: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": id,
        "client": client,
        "lead_type": "solar",
        "price": extra.pop("price", "10.00"),
        "delivery": {
            "method": "http",
            "url": buyer.url(f"/{id}"),
            "timeout_seconds": 5,
            "retry": {"count": 0, "delay_seconds": 1},
        },
        **extra,
    }


def catalog(buyer, *, clients=("a", "b", "c"), groups=(), accounts=None, options=None, **more) -> str:
    doc = {
        "options": options or {},
        "lead_types": [
            {
                "id": "solar",
                "name": "Solar",
                "duplicate_fields": ["phone"],
                "max_sales": 3,
                "fields": [
                    {"name": "first_name", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                    {"name": "state", "type": "us_state"},
                ],
            }
        ],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": [
            {"id": c, "name": c.upper(), "external_ref": f"EXT-{c}", "email": f"{c}@buyers.test"} for c in clients
        ],
        "groups": list(groups),
        "delivery_accounts": accounts if accounts is not None else [account(buyer, f"{c}1", c) for c in clients],
        **more,
    }
    return yaml.safe_dump(doc)


class System:
    def __init__(self, settings, buyer, conn, runtimes: list[Runtime]) -> None:
        self.settings, self.buyer, self.conn = settings, buyer, conn
        self.runtimes = runtimes

    async def apply(self, text: str) -> None:
        version = await apply_yaml(self.settings.database_url, text)
        if version is not None:
            await wait_for(lambda: all(r.catalog_cache.version == version for r in self.runtimes))

    async def send(self, tap: EventTap, body: dict[str, Any] | None = None, **headers: Any) -> dict[str, Any]:
        key = new_key()
        await publish_raw(self.settings, body or lead_body(phone=_phone()), message_id=key, headers=headers or None)
        await wait_for(lambda: any(b["idempotency_key"] == key for b in tap.bodies()))
        return next(b for b in tap.bodies() if b["idempotency_key"] == key)


_phones = iter(range(2000000, 9999999))


def _phone() -> str:
    return f"415{next(_phones)}"


@pytest_asyncio.fixture
async def system(settings, buyer, conn) -> AsyncIterator[System]:
    await apply_yaml(settings.database_url, catalog(buyer))
    router, delivery = build_router(settings), build_delivery(settings)
    sys_ = System(settings, buyer, conn, [router, delivery])
    async with router.running(), delivery.running():
        yield sys_


def buyers_of(outcome: dict[str, Any]) -> list[str]:
    return sorted(d["client_id"] for d in outcome["deliveries"])


@pytest.mark.parametrize(("flag", "expected"), [(True, 1), (False, 3)])
async def test_apply_groups_as_criteria_makes_a_group_exclusive(system, buyer, flag, expected):
    await system.apply(
        catalog(buyer, groups=[{"id": "g", "name": "G", "clients": ["a", "b", "c"], "apply_groups_as_criteria": flag}])
    )
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert outcome["status"] == "sold"
    assert len(buyers_of(outcome)) == expected
    assert len(buyer.received) == expected


async def test_groups_are_scanned_in_order_exclusive_then_shared(system, buyer):
    await system.apply(
        catalog(
            buyer,
            clients=("a", "b", "c", "d"),
            groups=[
                {"id": "first", "name": "First", "clients": ["b", "a"], "apply_groups_as_criteria": True},
                {"id": "second", "name": "Second", "clients": ["c", "d"], "apply_groups_as_criteria": False},
            ],
        )
    )
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert buyers_of(outcome) == ["a", "c", "d"]  # one of the first group (a: entered first), all of the second
    assert buyer.paths()[0] == "/a1"


async def test_a_refusal_moves_the_lead_inside_the_exclusive_group_then_on(system, buyer, conn):
    buyer.on("/a1", status=400, body='{"reason": "no"}')
    await system.apply(
        catalog(
            buyer,
            groups=[
                {"id": "g", "name": "G", "clients": ["a", "b"], "apply_groups_as_criteria": True},
                {"id": "h", "name": "H", "clients": ["c"], "apply_groups_as_criteria": True},
            ],
        )
    )
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert buyers_of(outcome) == ["b", "c"]
    assert buyer.paths() == ["/a1", "/b1", "/c1"]


async def test_max_sales_of_the_source_bounds_a_shared_group(system, buyer):
    text = catalog(
        buyer, groups=[{"id": "g", "name": "G", "clients": ["a", "b", "c"], "apply_groups_as_criteria": False}]
    )
    text = text.replace("name: Web", "name: Web\n  max_sales: 2")
    await system.apply(text)
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert buyers_of(outcome) == ["a", "b"]


async def test_round_robin_rotates_across_leads(system, buyer):
    await system.apply(
        catalog(
            buyer,
            groups=[
                {
                    "id": "g",
                    "name": "G",
                    "clients": ["a", "b", "c"],
                    "apply_groups_as_criteria": True,
                    "distribution": "round_robin",
                }
            ],
        )
    )
    async with EventTap(system.settings) as tap:
        firsts = [buyers_of(await system.send(tap))[0] for _ in range(6)]
    assert sorted(firsts) == ["a", "a", "b", "b", "c", "c"]
    assert firsts[:3] in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"])


async def test_highest_price_wins_inside_an_exclusive_group(system, buyer):
    await system.apply(
        catalog(
            buyer,
            accounts=[
                account(buyer, "a1", "a", price="10.00"),
                account(buyer, "b1", "b", price="30.00"),
                account(buyer, "c1", "c", price="20.00"),
            ],
            groups=[
                {
                    "id": "g",
                    "name": "G",
                    "clients": ["a", "b", "c"],
                    "apply_groups_as_criteria": True,
                    "distribution": "highest_price",
                }
            ],
        )
    )
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert outcome["deliveries"][0]["client_id"] == "b" and outcome["deliveries"][0]["price"] == "30.00"


@pytest.mark.parametrize(
    ("mapping", "force_id"), [("external_ref", "EXT-c"), ("email", "c@buyers.test"), ("client_id", "c")]
)
async def test_force_id_goes_only_to_the_named_client(system, buyer, mapping, force_id):
    await system.apply(catalog(buyer, options={"delivery_force_id_mapping": mapping}))
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap, {**lead_body(phone=_phone()), "force_id": force_id})
    assert buyers_of(outcome) == ["c"]
    assert buyer.paths() == ["/c1"]


async def test_force_id_naming_no_client_or_no_eligible_account_is_unsold(system, buyer):
    await system.apply(
        catalog(
            buyer,
            options={"delivery_force_id_mapping": "external_ref"},
            accounts=[account(buyer, "a1", "a"), account(buyer, "b1", "b", active=False)],
        )
    )
    async with EventTap(system.settings) as tap:
        nobody = await system.send(tap, {**lead_body(phone=_phone()), "force_id": "EXT-zzz"})
        inactive = await system.send(tap, {**lead_body(phone=_phone()), "force_id": "EXT-b"})
    assert nobody["status"] == "unsold" and "matches no client" in nobody["reason"]
    assert inactive["status"] == "unsold" and "forced client 'b'" in inactive["reason"]
    assert buyer.received == []


async def test_route_duplicate_leads_off_records_the_duplicate_and_delivers_nothing(system, buyer):
    async with EventTap(system.settings) as tap:
        first = await system.send(tap, lead_body(phone="4155550199"))
        second = await system.send(tap, lead_body(phone="(415) 555-0199"))
    assert first["status"] == "sold"
    assert second["status"] == "duplicate" and second["original_lead_id"] == first["lead_id"]
    assert len(buyer.received) == 1


async def test_route_duplicate_leads_on_never_reaches_a_client_that_had_the_original(system, buyer):
    await system.apply(catalog(buyer, options={"route_duplicate_leads": True}))
    async with EventTap(system.settings) as tap:
        first = await system.send(tap, lead_body(phone="4155550177"))
        second = await system.send(tap, lead_body(phone="4155550177"))
        third = await system.send(tap, lead_body(phone="4155550177"))
        fourth = await system.send(tap, lead_body(phone="4155550177"))
    assert [buyers_of(o) for o in (first, second, third)] == [["a"], ["b"], ["c"]]
    assert second["original_lead_id"] == first["lead_id"]
    assert fourth["status"] == "duplicate"  # every client already has this person


async def test_route_duplicate_leads_per_client_override(system, buyer):
    text = catalog(buyer, options={"route_duplicate_leads": False})
    text = text.replace("name: C\n", "name: C\n  options:\n    route_duplicate_leads: true\n")
    await system.apply(text)
    async with EventTap(system.settings) as tap:
        await system.send(tap, lead_body(phone="4155550155"))
        second = await system.send(tap, lead_body(phone="4155550155"))
    assert buyers_of(second) == ["c"]


async def test_a_daily_cap_holds_and_a_failed_delivery_gives_its_unit_back(system, buyer, conn):
    await system.apply(
        catalog(
            buyer,
            clients=("a", "b"),
            accounts=[account(buyer, "a1", "a", caps={"daily": 2}), account(buyer, "b1", "b", priority=1)],
        )
    )
    buyer.on("/a1", status=400)
    async with EventTap(system.settings) as tap:
        refused = await system.send(tap)
        buyer.responses.pop("/a1")
        outcomes = [await system.send(tap) for _ in range(3)]
    assert buyers_of(refused) == ["b"]  # a1 refused: its unit is back, so a1 still has 2 today
    assert [buyers_of(o) for o in outcomes] == [["a"], ["a"], ["b"]]
    assert await conn.fetchval("SELECT used FROM cap_usage WHERE delivery_account_id = 'a1' AND period = 'daily'") == 2


async def test_require_order_needs_an_open_order_with_room(system, buyer, conn):
    base = dict(
        clients=("a", "b"),
        accounts=[account(buyer, "a1", "a", require_order=True), account(buyer, "b1", "b", priority=1)],
    )
    order = {"id": "o1", "client": "a", "type": "lead_quantity", "total": 2, "start_date": "2020-01-01"}
    async with EventTap(system.settings) as tap:
        await system.apply(catalog(buyer, **base))
        assert buyers_of(await system.send(tap)) == ["b"]  # no order at all
        await system.apply(catalog(buyer, **base, orders=[{**order, "status": "paused"}]))
        assert buyers_of(await system.send(tap)) == ["b"]  # paused order
        await system.apply(catalog(buyer, **base, orders=[order]))
        sold = [buyers_of(await system.send(tap)) for _ in range(3)]
    assert sold == [["a"], ["a"], ["b"]]  # the order holds two leads, then routing moves on
    row = await conn.fetchrow("SELECT received, status FROM orders WHERE id = 'o1'")
    assert row["received"] == 2


async def test_an_auto_paused_account_is_skipped(system, buyer, conn):
    await conn.execute("INSERT INTO delivery_account_state (delivery_account_id, paused) VALUES ('a1', true)")
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert buyers_of(outcome) == ["b"]


async def test_criteria_and_inactive_clients_limit_eligibility(system, buyer):
    text = catalog(
        buyer,
        accounts=[
            account(buyer, "a1", "a", criteria=[{"field": "state", "op": "in", "value": ["NV"]}]),
            account(buyer, "b1", "b"),
            account(buyer, "c1", "c", priority=-1),
        ],
    )
    text = text.replace("name: C\n", "name: C\n  active: false\n")
    await system.apply(text)
    async with EventTap(system.settings) as tap:
        ca = await system.send(tap, lead_body(phone=_phone(), state="CA"))
        nv = await system.send(tap, lead_body(phone=_phone(), state="NV"))
    assert buyers_of(ca) == ["b"] and buyers_of(nv) == ["a"]


async def test_unsold_when_nothing_is_eligible(system, buyer):
    await system.apply(catalog(buyer, accounts=[]))
    async with EventTap(system.settings) as tap:
        outcome = await system.send(tap)
    assert outcome["status"] == "unsold" and outcome["reason"] == "no eligible delivery account"
