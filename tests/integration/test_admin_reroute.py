"""Re-routing an unsold lead from the admin API, over the real broker: the console's outbox sends
`router.reroute`, the router (running for real, with delivery and a fake buyer) plans the lead
again under the catalog it has loaded now. A lead that finds no buyer stays unsold with the new
reason; once the catalog has a buyer for it, it is sold, once; a repeated command (same message
id) does nothing twice; a lead that is not unsold is refused (409); a viewer is refused (403)."""

from __future__ import annotations

import uuid

import pytest
import yaml

from tests.admin_support import running_console
from tests.support import catalog_yaml, lead_body, new_key, publish_event, publish_raw, start_buyer, wait_for

pytestmark = [pytest.mark.integration]


async def lead_row(site, key: str):
    async with site.db() as conn:
        return await conn.fetchrow("SELECT id, status, reason FROM leads WHERE idempotency_key = $1", key)


async def test_reroute_an_unsold_lead_over_the_broker(settings):
    buyer, stop = start_buyer()
    try:
        only_nevada = yaml.safe_load(catalog_yaml(buyer))
        for account in only_nevada["delivery_accounts"]:
            account["criteria"] = [{"field": "state", "op": "equals", "value": "NV"}]
        async with running_console(settings, services=("router", "delivery")) as site:
            await site.apply_catalog(yaml.safe_dump(only_nevada))
            await site.staff("otto@staff.test", "operator")
            await site.staff("vic@staff.test", "viewer")
            operator, viewer = await site.key("otto@staff.test"), await site.key("vic@staff.test")

            first, second = new_key(), new_key()
            await publish_raw(settings, lead_body(), message_id=first)
            await publish_raw(settings, lead_body(phone="415-555-0199"), message_id=second)
            await wait_for(lambda: _status_is(site, first, "unsold"), timeout=30)
            await wait_for(lambda: _status_is(site, second, "unsold"), timeout=30)
            lead = await lead_row(site, first)
            url = f"/admin/api/v1/leads/{lead['id']}/reroute"

            async with site.client(operator) as api, site.client(viewer) as reader:
                assert (await reader.post(url)).status_code == 403
                assert (await api.post(f"/admin/api/v1/leads/{uuid.uuid4()}/reroute")).status_code == 404

                # Nothing in the catalog takes it yet: it stays unsold, saying so.
                assert (await api.post(url)).status_code == 202
                await wait_for(lambda: _reason_starts(site, first, "re-routed by an admin"), timeout=30)
                assert (await lead_row(site, first))["status"] == "unsold"

                # The catalog now has buyers for California: re-routed, it sells once.
                await site.apply_catalog(catalog_yaml(buyer))
                assert (await api.post(url)).status_code == 202
                await wait_for(lambda: _status_is(site, first, "sold"), timeout=30)
                assert (await api.post(url)).status_code == 409  # sold: nothing to re-route

            # The same command delivered twice (one message id): the lead is offered once.
            other = await lead_row(site, second)
            command = {"version": 1, "lead_id": str(other["id"]), "requested_by": "test"}
            await publish_event(settings, "router.reroute", command, message_id=str(uuid.uuid4()), copies=2)
            await wait_for(lambda: _status_is(site, second, "sold"), timeout=30)

            async with site.db() as conn:
                deliveries = await conn.fetch(
                    "SELECT lead_id, delivery_account_id, status FROM deliveries ORDER BY created_at"
                )
                audit = await conn.fetch("SELECT actor, target FROM admin_audit WHERE action = 'lead.reroute'")
            assert [(d["lead_id"], d["status"]) for d in deliveries] == [
                (lead["id"], "succeeded"),
                (other["id"], "succeeded"),
            ]
            assert buyer.paths() == ["/acme", "/acme"]
            assert [(a["actor"], a["target"]) for a in audit] == [("otto@staff.test", str(lead["id"]))] * 2
    finally:
        stop()


async def _status_is(site, key: str, status: str) -> bool:
    row = await lead_row(site, key)
    return row is not None and row["status"] == status


async def _reason_starts(site, key: str, prefix: str) -> bool:
    row = await lead_row(site, key)
    return row is not None and (row["reason"] or "").startswith(prefix)
