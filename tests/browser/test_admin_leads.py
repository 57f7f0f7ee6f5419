"""Leads in a real browser, with router and delivery running: search by every filter, bad input
beside its field, and a lead's timeline from the real tables (received → duplicate check → plan →
delivery and post attempts with secrets masked → outcome → returns)."""

from __future__ import annotations

from functools import partial

import pytest
import yaml

from harness.broker import publish
from harness.buyer import FakeBuyer
from tests.admin_support import running_console
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

SECRET = "s3cr3t-bearer-token-value"
URL_SECRET = "url-api-key-value-77"
HEADER_SECRET = "partner-header-value-88"


def catalog(buyer: FakeBuyer) -> str:
    return yaml.safe_dump(
        {
            "lead_types": [
                {
                    "id": "solar",
                    "name": "Solar",
                    "duplicate_fields": ["phone"],
                    "fields": [
                        {"name": "first_name", "required": True},
                        {"name": "email", "type": "email"},
                        {"name": "phone", "type": "phone", "required": True},
                        {"name": "api_password"},
                    ],
                }
            ],
            "sources": [{"id": "web", "name": "Web"}],
            "clients": [{"id": "acme", "name": "Acme"}],
            "delivery_accounts": [
                {
                    "id": "acme-solar",
                    "client": "acme",
                    "lead_type": "solar",
                    "price": "12.50",
                    "delivery": {
                        "method": "http",
                        "url": buyer.url("/acme") + f"?campaign=5&api_key={URL_SECRET}",
                        # A header whose name the delivery log does not take for a secret: the
                        # console masks it anyway (services/admin/masking.py).
                        "headers": {"X-Partner": HEADER_SECRET},
                        "auth": {"type": "bearer", "token": SECRET},
                        "timeout_seconds": 5,
                        "retry": {"count": 1, "delay_seconds": 1},
                    },
                }
            ],
        }
    )


async def send(settings, key: str, fields: dict[str, str]) -> None:
    await publish(
        settings.amqp_url,
        f"{settings.namespace}.inbound",
        "lead.solar",
        {"lead_type": "solar", "source": "web", "fields": fields},
        headers={"idempotency-key": key},
    )


async def test_search_and_timeline(page, web_settings):
    buyer = FakeBuyer().start()
    try:
        async with running_console(web_settings, services=("router", "delivery")) as site:
            await site.apply_catalog(catalog(buyer))
            await site.staff("vera@staff.test", "viewer")
            await send(
                site.settings,
                "web-1",
                {"first_name": "Ann", "email": "ann@example.com", "phone": "(415) 555-0101", "api_password": "hunter2"},
            )

            async def decided(count: int) -> bool:
                async with site.db() as conn:
                    return await conn.fetchval("SELECT count(*) FROM leads WHERE status <> 'routing'") == count

            # The original first (leads of one person arriving together race for "original").
            await wait_for(partial(decided, 1), timeout=30)
            await send(site.settings, "web-2", {"first_name": "Ann again", "phone": "415-555-0101"})
            await send(site.settings, "web-3", {"first_name": "Bob"})  # no phone: rejected
            await wait_for(partial(decided, 3), timeout=30)
            async with site.db() as conn:
                sold = await conn.fetchval("SELECT id FROM leads WHERE idempotency_key = 'web-1'")
                assert await conn.fetchval("SELECT status FROM leads WHERE id = $1", sold) == "sold"

            await site.login(page, "vera@staff.test")
            searches = {
                "key=web-1": ["web-1"],
                "contact=ann%40example.com": ["web-1"],
                "contact=415+555+0101": ["web-1"],  # stored as digits (a valid lead)
                "contact=415-555-0101": ["web-2", "web-1"],  # and as typed (a duplicate keeps its text)
                "status=rejected": ["web-3"],
                "status=duplicate&type=solar&source=web": ["web-2"],
                f"id={sold}": ["web-1"],
                "from=2000-01-01&to=2100-12-31": ["web-3", "web-2", "web-1"],
                "from=2001-01-01&to=2001-01-02": [],
            }
            for query, keys in searches.items():
                await page.goto(f"{site.url}/leads?{query}")
                found = await page.eval_on_selector_all(
                    "#leads tr[data-lead] td:nth-child(4) small", "cells => cells.map(c => c.textContent)"
                )
                assert sorted(found) == sorted(keys), (query, found)
            for query, field, message in [
                ("id=nope", "id", "32 hex digits"),
                ("from=2026-02-30", "from", "YYYY-MM-DD"),
                ("from=2026-03-02&to=2026-03-01", "to", "before the start date"),
                ("status=lost", "status", "Choose a status"),
                ("type=cars", "type", "Choose a lead type"),
                ("contact=ab", "contact", "at least 3 characters"),
                ("before=garbage", "before", "not valid any more"),
            ]:
                response = await page.goto(f"{site.url}/leads?{query}")
                assert response is not None and response.status == 400, query
                assert message in await page.inner_text(f"#{field}-error"), query

            await page.goto(f"{site.url}/leads/{sold}")
            kinds = await page.eval_on_selector_all("#timeline li", "items => items.map(i => i.dataset.kind)")
            assert kinds[:3] == ["received", "duplicate_check", "plan"]
            assert "delivery" in kinds and "attempt" in kinds and "delivery_done" in kinds and "outcome" in kinds
            assert kinds.index("attempt") < kinds.index("outcome")
            text = await page.inner_text("#timeline")
            assert "Post attempt 1: accepted (HTTP 200" in text and "Outcome: sold" in text
            html = await page.content()
            assert SECRET not in html and "hunter2" not in html
            assert URL_SECRET not in html and HEADER_SECRET not in html
            assert "X-Partner: ********" in html and "campaign=5" in html
            async with site.client(await site.key("vera@staff.test")) as api:
                view = (await api.get(f"{site.api}/leads/{sold}")).json()
                assert [s["kind"] for s in view["timeline"]] == kinds
                assert SECRET not in str(view) and URL_SECRET not in str(view) and HEADER_SECRET not in str(view)
                listed = (await api.get(f"{site.api}/leads", params={"status": "duplicate"})).json()
                assert [lead["idempotency_key"] for lead in listed["leads"]] == ["web-2"]
                assert (await api.get(f"{site.api}/leads", params={"from": "yesterday"})).status_code == 400
                assert (await api.get(f"{site.api}/leads/00000000-0000-0000-0000-000000000000")).status_code == 404
            duplicate = await page.goto(f"{site.url}/leads?key=web-2")
            assert duplicate is not None
            await page.click("#leads a")
            assert "Duplicate of lead" in await page.inner_text("#timeline")
    finally:
        buyer.stop()
