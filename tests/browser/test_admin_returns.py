"""The returns queue in a real browser, with the real returns service behind it: pending returns
with their lead, delivery and cap usage; approve or deny one with a note; bulk decisions; bad
input beside the field with nothing sent; a viewer cannot decide; the API's decisions."""

from __future__ import annotations

import uuid
from functools import partial

import pytest

from services.returns import usecases as returns_usecases
from shared import db
from shared.contracts import ReturnRequest
from shared.process import Standalone
from tests.admin_support import running_console
from tests.portal_support import person, portal_catalog, sell
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def pending_returns(site, client: str, count: int) -> list[uuid.UUID]:
    """`count` leads sold to `client`, each with a pending return requested through the returns
    service's own use case."""
    ids = []
    pool = await db.create_pool(site.settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            leads = [await sell(conn, client, person(n)) for n in range(count)]
            # Enough other sales that a 10% cap admits these returns.
            for n in range(100, 100 + 10 * count):
                await sell(conn, client, person(n))
        deps = returns_usecases.Deps(Standalone(pool, site.app.state.runtime.catalog, site.settings))
        for lead_id in leads:
            return_id = uuid.uuid4()
            outcome = await returns_usecases.request_return(
                deps,
                ReturnRequest(
                    return_id=return_id, client_id=client, lead_id=lead_id, reason="wrong_number", comment="no answer"
                ),
            )
            assert outcome.status == "pending", outcome
            ids.append(return_id)
    finally:
        await pool.close()
    return ids


async def status_of(site, return_id: uuid.UUID) -> str:
    async with site.db() as conn:
        return str(await conn.fetchval("SELECT status FROM returns WHERE id = $1", return_id))


async def test_the_returns_queue_decides_one_and_many(page, web_settings):
    async with running_console(web_settings, services=("returns",)) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("otto@staff.test", "operator")
        ids = await pending_returns(site, "acme", 4)
        await site.login(page, "otto@staff.test")
        await page.goto(f"{site.url}/returns")
        row = page.locator(f"tr[data-return='{ids[0]}']")
        text = await row.inner_text()
        assert "Person0 Surname0" in text and "wrong_number" in text and "acme-solar" in text
        cap = await row.locator(".cap").inner_text()
        assert "delivery account acme-solar: 4 of 4 allowed (10% of 44 delivered)" in cap

        # No note: refused beside the note, nothing sent.
        await row.locator("button:has-text('Approve')").click()
        assert "Write a note" in await page.inner_text("#note-error")
        # No return chosen for a bulk decision.
        await page.fill("#note", "checked the recording")
        await page.click("button[name=decision][value=deny]")
        assert "Choose at least one return" in await page.inner_text("#return_id-error")
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'return.decide'") == 0
            assert await conn.fetchval("SELECT count(*) FROM returns WHERE status = 'pending'") == 4

        # One approval.
        await page.fill("#note", "number was disconnected")
        await page.locator(f"tr[data-return='{ids[0]}'] button:has-text('Approve')").click()
        assert "Sent 1 approval" in await page.inner_text("#sent")
        await wait_for(lambda: _is(site, ids[0], "approved"))
        # Bulk: deny two at once.
        await page.goto(f"{site.url}/returns")
        for return_id in ids[1:3]:
            await page.check(f"input[name=return_id][value='{return_id}']")
        await page.fill("#note", "calls were answered")
        await page.click("button[name=decision][value=deny]")
        assert "Sent 2 denial" in await page.inner_text("#sent")
        for return_id in ids[1:3]:
            await wait_for(partial(_is, site, return_id, "denied"))
        await page.goto(f"{site.url}/returns?status=all")
        decided = await page.inner_text(f"tr[data-return='{ids[1]}'] .status")
        assert "denied" in decided and "calls were answered" in decided and "otto@staff.test" in decided
        async with site.db() as conn:
            audit = await conn.fetch("SELECT target, detail FROM admin_audit WHERE action = 'return.decide'")
            assert {a["target"] for a in audit} == {str(i) for i in ids[:3]}
            credit = await conn.fetchval("SELECT credit FROM returns WHERE id = $1", ids[0])
            assert credit > 0

        # Deciding a return that is no longer pending changes nothing (a stale page's form).
        answer = await page.request.post(
            f"{site.url}/returns/decide",
            form={"csrf": await page.input_value("input[name=csrf]"), "one": f"deny:{ids[0]}", "note": "again"},
        )
        assert answer.status == 409 and "already decided" in await answer.text()
        assert await status_of(site, ids[0]) == "approved"
        # Bad filters answer beside the filter.
        await page.goto(f"{site.url}/returns?status=lost&client=nobody")
        assert "Choose pending" in await page.inner_text("#status-error")
        assert "Choose a client" in await page.inner_text("#client-error")

        # A viewer sees the queue but no way to decide, and the API refuses its key.
        await site.staff("vera@staff.test", "viewer")
        viewer_key = await site.key("vera@staff.test")
        async with site.client(viewer_key) as api:
            queue = (await api.get(f"{site.api}/returns")).json()
            assert [r["id"] for r in queue] == [str(ids[3])]
            assert queue[0]["caps"][0]["allowed"] == 4
            refused = await api.post(
                f"{site.api}/returns/decisions", json={"return_ids": [str(ids[3])], "decision": "approve", "note": "x"}
            )
            assert refused.status_code == 403
        operator_key = await site.key("otto@staff.test")
        async with site.client(operator_key) as api:
            sent = await api.post(
                f"{site.api}/returns/decisions",
                json={"return_ids": [str(ids[3])], "decision": "approve", "note": "by the API"},
            )
            assert sent.status_code == 202 and sent.json() == {"sent": 1}
        await wait_for(lambda: _is(site, ids[3], "approved"))


async def _is(site, return_id: uuid.UUID, status: str) -> bool:
    return await status_of(site, return_id) == status
