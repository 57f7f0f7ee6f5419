"""The buyer API over real HTTP, with the real router, delivery and returns (docs/buyer-api.md):
a buyer key acts for its own client only."""

from __future__ import annotations

import asyncpg
import pytest

from harness.buyer import FakeBuyer
from shared.settings import Settings
from tests.intake_support import running_intake, solar

pytestmark = pytest.mark.integration

SERVICES = ("router", "delivery", "returns")


async def test_a_buyer_works_its_own_leads(settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection) -> None:
    async with running_intake(settings, buyer, services=SERVICES) as site, site.client(site.web_key) as source:
        leads = []
        for n in range(3):
            answer = await source.post(
                "/v1/leads/solar", json=solar(f"415-555-01{n:02d}"), headers={"Idempotency-Key": f"b-{n}"}
            )
            assert answer.json()["status"] == "sold"
            leads.append(answer.json()["lead_id"])
        async with site.client(await site.buyer_key("acme")) as acme:
            listed = (await acme.get("/v1/buyer/leads")).json()
            assert [lead["lead_id"] for lead in listed["leads"]] == leads[::-1]  # newest first
            assert listed["leads"][0]["price"] == "25.00" and listed["leads"][0]["fields"]["first_name"] == "Ada"
            assert listed["next_cursor"] is None

            page = (await acme.get("/v1/buyer/leads", params={"limit": 2})).json()
            assert [lead["lead_id"] for lead in page["leads"]] == leads[:0:-1]
            rest = (await acme.get("/v1/buyer/leads", params={"limit": 2, "cursor": page["next_cursor"]})).json()
            assert [lead["lead_id"] for lead in rest["leads"]] == leads[:1]
            assert (await acme.get("/v1/buyer/leads", params={"lead_type": "auto"})).json()["leads"] == []
            assert (await acme.get("/v1/buyer/leads", params={"since": "2999-01-01"})).json()["leads"] == []

            one = await acme.get(f"/v1/buyer/leads/{leads[0]}")
            assert one.status_code == 200 and one.json()["lead_type"] == "solar"

            # Confirm a price: applied; the same Idempotency-Key again is the same command.
            confirm = f"/v1/buyer/leads/{leads[0]}/confirm-price"
            applied = await acme.post(confirm, json={"price": "19.50"}, headers={"Idempotency-Key": "p-1"})
            assert applied.status_code == 200, applied.text
            assert (applied.json()["outcome"], applied.json()["price"], applied.json()["repeat"]) == (
                "applied",
                "19.50",
                False,
            )
            again = await acme.post(confirm, json={"price": "19.50"}, headers={"Idempotency-Key": "p-1"})
            assert again.json()["repeat"] is True
            assert (await acme.get(f"/v1/buyer/leads/{leads[0]}")).json()["price"] == "19.50"
            bad = await acme.post(confirm, json={"price": "cheap"})
            assert bad.status_code == 200 and bad.json()["outcome"] == "refused" and bad.json()["reason"]
            assert (await acme.post(confirm, json={})).status_code == 400

            # A return: the returns service's answer.
            returned = await acme.post(
                f"/v1/buyer/leads/{leads[1]}/return", json={"reason": "wrong_number", "comment": "dead line"}
            )
            assert returned.status_code == 200, returned.text
            assert returned.json()["status"] == "pending"
            invalid = await acme.post(f"/v1/buyer/leads/{leads[2]}/return", json={"reason": "meh"})
            assert invalid.json()["status"] == "denied" and invalid.json()["decision_reason"] == "invalid_reason"
            assert (await acme.post(f"/v1/buyer/leads/{leads[2]}/return", json={})).status_code == 400

            # A disposition, and the filter by it.
            done = await acme.put(
                f"/v1/buyer/leads/{leads[0]}/disposition", json={"disposition": "won", "note": "signed"}
            )
            assert done.status_code == 200 and done.json()["disposition"] == "won"
            assert (
                await acme.put(f"/v1/buyer/leads/{leads[0]}/disposition", json={"disposition": "maybe"})
            ).status_code == 400
            won = (await acme.get("/v1/buyer/leads", params={"disposition": "won"})).json()["leads"]
            assert [(lead["lead_id"], lead["disposition_note"]) for lead in won] == [(leads[0], "signed")]
            none = (await acme.get("/v1/buyer/leads", params={"disposition": "none"})).json()["leads"]
            assert {lead["lead_id"] for lead in none} == set(leads[1:])
            assert {lead["lead_id"]: lead["return_status"] for lead in none}[leads[1]] == "pending"


async def test_a_buyer_key_cannot_touch_another_clients_lead(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    async with running_intake(settings, buyer, services=SERVICES) as site, site.client(site.web_key) as source:
        lead_id = (await source.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "x"})).json()[
            "lead_id"
        ]
        async with site.client(await site.buyer_key("bolt")) as bolt:
            assert (await bolt.get("/v1/buyer/leads")).json()["leads"] == []
            assert (await bolt.get(f"/v1/buyer/leads/{lead_id}")).status_code == 404
            price = await bolt.post(f"/v1/buyer/leads/{lead_id}/confirm-price", json={"price": "0.01"})
            assert price.status_code == 404
            returned = await bolt.post(f"/v1/buyer/leads/{lead_id}/return", json={"reason": "wrong_number"})
            assert returned.status_code == 404
            disposition = await bolt.put(f"/v1/buyer/leads/{lead_id}/disposition", json={"disposition": "bad"})
            assert disposition.status_code == 404
            assert (await bolt.get("/v1/buyer/leads/not-a-uuid")).status_code == 404
        # Nothing changed for acme's lead.
        assert await conn.fetchval("SELECT price FROM deliveries") == 25
        assert await conn.fetchval("SELECT count(*) FROM returns") == 0
        assert await conn.fetchval("SELECT count(*) FROM buyer_lead_dispositions") == 0
        # A source key is not a buyer key.
        assert (await source.get("/v1/buyer/leads")).status_code == 401
