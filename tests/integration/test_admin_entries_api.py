"""The API's catalog entries (delivery accounts, groups, orders): the same use case as the forms,
with If-Match, errors named by the entry's paths, 409 on a stale version, 403 for a viewer's key,
nothing saved on any refusal."""

from __future__ import annotations

import pytest

from tests.admin_support import running_console
from tests.portal_support import portal_catalog

pytestmark = [pytest.mark.integration]

ACCOUNT = {
    "id": "bolt-auto",
    "client": "bolt",
    "lead_type": "auto",
    "price": "9.50",
    "caps": {"daily": 5},
    "criteria": [{"field": "state", "op": "in", "value": ["CA"]}],
    "delivery": {"method": "email", "to": ["leads@bolt.example"]},
}


async def versions(site) -> int:
    async with site.db() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM catalog_versions"))


async def test_entries_through_the_api(settings):
    async with running_console(settings) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("ada@staff.test", "admin")
        await site.staff("vic@staff.test", "viewer")
        admin, viewer = await site.key("ada@staff.test"), await site.key("vic@staff.test")
        async with site.client(admin) as api, site.client(viewer) as reader:
            got = await reader.get("/admin/api/v1/accounts/acme-solar")
            assert got.status_code == 200 and got.json()["entry"]["price"] == "25.00"
            assert got.headers["etag"] == '"1"'

            refused = await reader.post("/admin/api/v1/accounts", json=ACCOUNT, headers={"If-Match": "1"})
            assert refused.status_code == 403
            assert (await api.post("/admin/api/v1/accounts", json=ACCOUNT)).status_code == 428

            bad = {**ACCOUNT, "price": "lots", "delivery": {"method": "http", "url": "ftp://x"}}
            answer = await api.post("/admin/api/v1/accounts", json=bad, headers={"If-Match": "1"})
            assert answer.status_code == 400
            assert set(answer.json()["errors"]) == {"price", "delivery.url"}
            assert await versions(site) == 1

            made = await api.post("/admin/api/v1/accounts", json=ACCOUNT, headers={"If-Match": "1"})
            assert made.status_code == 201, made.text
            assert made.json() == {"version": 2, "changed": True, "id": "bolt-auto"}

            stale = await api.put(
                "/admin/api/v1/accounts/bolt-auto", json={**ACCOUNT, "price": "11"}, headers={"If-Match": "1"}
            )
            assert stale.status_code == 409
            renamed = await api.put(
                "/admin/api/v1/accounts/bolt-auto", json={**ACCOUNT, "id": "other"}, headers={"If-Match": "2"}
            )
            assert renamed.status_code == 400 and "id" in renamed.json()["errors"]
            changed = await api.put(
                "/admin/api/v1/accounts/bolt-auto", json={**ACCOUNT, "price": "11"}, headers={"If-Match": "2"}
            )
            assert changed.json() == {"version": 3, "changed": True, "id": "bolt-auto"}
            no_id = {k: v for k, v in ACCOUNT.items() if k != "id"}
            missing = await api.put("/admin/api/v1/accounts/nobody", json=no_id, headers={"If-Match": "3"})
            assert missing.status_code == 404

            group = {"id": "east", "name": "East", "clients": ["bolt", "acme"], "distribution": "round_robin"}
            assert (await api.post("/admin/api/v1/groups", json=group, headers={"If-Match": "3"})).status_code == 201
            listed = await reader.get("/admin/api/v1/groups")
            assert [g["id"] for g in listed.json()["entries"]] == ["east"]
            again = await api.put(
                "/admin/api/v1/groups/east", json={**group, "clients": ["ghost"]}, headers={"If-Match": "4"}
            )
            assert again.status_code == 400 and "unknown client 'ghost'" in again.json()["errors"]["clients"]

            order = {"id": "o1", "client": "acme", "type": "lead_quantity", "total": 10, "start_date": "2026-12-01"}
            assert (await api.post("/admin/api/v1/orders", json=order, headers={"If-Match": "4"})).status_code == 201
            assert (await reader.get("/admin/api/v1/orders/o1")).json()["entry"]["accounts"] == "all"

        async with site.db() as conn:
            actions = [
                r["action"]
                for r in await conn.fetch(
                    "SELECT action FROM admin_audit"
                    " WHERE action NOT LIKE 'staff.%' AND action NOT LIKE 'api_key.%' ORDER BY id"
                )
            ]
            assert actions == ["account.create", "account.change", "group.create", "order.create"]
            assert await conn.fetchval("SELECT price FROM delivery_accounts WHERE id = 'bolt-auto'") == 11
