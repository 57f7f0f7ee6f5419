"""Client Portal, the Order Manager (G1–G14) in a real browser, with the returns service (which
owns order status) behind it: every column of the seed in the order's units, pause and resume of
open orders by admins (a command answered by the service), read-only for other users; another
client's order is a 404."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import yaml

from tests.portal_support import portal_catalog, running_site
from tests.support import EventTap, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

ORDERS = [
    {
        "id": "acme-q1",
        "client": "acme",
        "type": "lead_quantity",
        "total": "100",
        "start_date": "2026-01-01",
        "end_date": "2027-12-31",
        "renewal": "on_fill",
        "auto_charge": True,
    },
    {
        "id": "acme-dollars",
        "client": "acme",
        "type": "dollar_amount",
        "total": "5000",
        "start_date": "2026-11-01",
        "renewal": "close_at_end",
        "status": "paused",
    },
    {
        "id": "acme-old",
        "client": "acme",
        "type": "lead_quantity",
        "total": "10",
        "start_date": "2025-01-01",
        "status": "closed",
    },
    {"id": "bolt-q", "client": "bolt", "type": "lead_quantity", "total": "50", "start_date": "2026-01-01"},
]


def catalog() -> str:
    doc = yaml.safe_load(portal_catalog())
    doc["orders"] = ORDERS
    return yaml.safe_dump(doc)


async def cells(page, order_id: str) -> dict[str, str]:
    row = page.locator(f"#orders-table tr[data-order='{order_id}']")
    names = [
        "id",
        "start",
        "end",
        "status",
        "renewal",
        "auto-charge",
        "units",
        "total",
        "received",
        "remaining",
        "cost",
        "paid",
    ]
    return {name: (await row.locator(f"td.{name}").inner_text()).strip() for name in names}


async def test_g1_g14_every_column_in_its_units_and_admins_pause_and_resume(page, web_settings, smtp):
    async with (
        AsyncExitStack() as stack,
        running_site(web_settings, smtp, services=("portal_auth", "returns"), catalog=catalog()) as site,
    ):
        await site.user("acme", "ann@acme.test", is_admin=True)
        async with site.db() as conn:
            await conn.execute("UPDATE orders SET received = 40, cost = 1000, amount_paid = 500 WHERE id = 'acme-q1'")
            await conn.execute(
                "UPDATE orders SET received = 1234.50, reserved = 25, cost = 1300, amount_paid = 1000"
                " WHERE id = 'acme-dollars'"
            )
        tap = await stack.enter_async_context(EventTap(web_settings, binding="order.*"))
        await site.login(page, "ann@acme.test")
        await page.click("nav >> text=Orders")
        await page.wait_for_url(f"{site.url}/orders")
        listed = [await r.get_attribute("data-order") for r in await page.locator("#orders-table tbody tr").all()]
        assert listed == ["acme-old", "acme-q1", "acme-dollars"]  # by start date; never bolt's
        assert await cells(page, "acme-q1") == {
            "id": "acme-q1",
            "start": "2026-01-01",
            "end": "2027-12-31",
            "status": "Open",
            "renewal": "On fill",
            "auto-charge": "Yes",
            "units": "Leads",
            "total": "100 leads",
            "received": "40 leads",
            "remaining": "60 leads",
            "cost": "$1,000.00",
            "paid": "$500.00",
        }
        dollars = await cells(page, "acme-dollars")
        assert dollars["end"] == "—" and dollars["status"] == "Paused" and dollars["renewal"] == "Close at end date"
        assert (dollars["units"], dollars["total"], dollars["received"]) == ("Dollars", "$5,000.00", "$1,234.50")
        assert dollars["remaining"].startswith("$3,765.50") and "$25.00 in delivery" in dollars["remaining"]
        assert (await cells(page, "acme-old"))["status"] == "Closed"
        # Buttons: pause the open order, resume the paused one, nothing on the closed one.
        assert await page.locator("tr[data-order='acme-q1'] button").all_inner_texts() == ["Pause"]
        assert await page.locator("tr[data-order='acme-dollars'] button").all_inner_texts() == ["Resume"]
        assert await page.locator("tr[data-order='acme-old'] button").count() == 0

        await page.click("tr[data-order='acme-q1'] button")
        await page.wait_for_url("**/orders?done=paused&order=acme-q1")
        assert "acme-q1 is paused" in await page.inner_text("#orders-notice")
        assert (await cells(page, "acme-q1"))["status"] == "Paused"
        await page.click("tr[data-order='acme-dollars'] button")
        await page.wait_for_url("**/orders?done=resumed&order=acme-dollars")
        assert (await cells(page, "acme-dollars"))["status"] == "Open"
        async with site.db() as conn:
            statuses = dict(await conn.fetch("SELECT id, status FROM orders"))
        assert statuses == {"acme-q1": "paused", "acme-dollars": "open", "acme-old": "closed", "bolt-q": "open"}
        changes = ("order.paused", "order.resumed")
        await wait_for(lambda: len([m for m in tap.messages if m[0] in changes]) == 2)
        assert [(key, body["order_id"], body["requested_by"]) for key, body, _ in tap.messages if key in changes] == [
            ("order.paused", "acme-q1", "ann@acme.test"),
            ("order.resumed", "acme-dollars", "ann@acme.test"),
        ]

        # A refused command says why; another client's order is a 404 and stays as it was.
        csrf = await page.get_attribute("tr[data-order='acme-q1'] input[name=csrf]", "value")
        refused = await page.request.post(f"{site.url}/orders/acme-old/resume", form={"csrf": csrf})
        assert refused.status == 409
        assert "This order is closed, so it cannot be resumed." in await refused.text()
        for path in ("/orders/bolt-q/pause", "/orders/no-such-order/pause", "/orders/..%2Fx/pause"):
            response = await page.request.post(site.url + path, form={"csrf": csrf}, max_redirects=0)
            assert response.status == 404, path
        async with site.db() as conn:
            assert await conn.fetchval("SELECT status FROM orders WHERE id = 'bolt-q'") == "open"


async def test_orders_are_read_only_for_users_who_are_not_admins(page, web_settings, smtp):
    async with running_site(web_settings, smtp, services=("portal_auth", "returns"), catalog=catalog()) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        await site.user("acme", "eve@acme.test")
        await site.login(page, "eve@acme.test")
        await page.goto(f"{site.url}/orders")
        assert await page.locator("#orders-table tbody tr").count() == 3
        assert await page.locator("#orders-table button").count() == 0
        assert "Only your company's admins" in await page.inner_text("#content")
        csrf = await page.get_attribute("form[action$='/logout'] input[name=csrf]", "value")
        response = await page.request.post(f"{site.url}/orders/acme-q1/pause", form={"csrf": csrf})
        assert response.status == 403
        # Without the CSRF token nothing happens either.
        response = await page.request.post(f"{site.url}/orders/acme-q1/pause", form={})
        assert response.status == 403
        async with site.db() as conn:
            assert await conn.fetchval("SELECT status FROM orders WHERE id = 'acme-q1'") == "open"
