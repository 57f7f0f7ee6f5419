"""Operations in a real browser, with the returns service running: dead letters (a real one
purged; replaying one whose message was already handled changes nothing twice; replaying from the
table when the DLQ copy is gone), paused delivery accounts resumed, orders (payment, pause), each
recorded in the audit; bad input beside the field."""

from __future__ import annotations

import json
import uuid
from functools import partial

import aio_pika
import pytest
import yaml

from harness.broker import publish
from shared.contracts import ReturnDecide
from tests.admin_support import running_console
from tests.browser.test_admin_returns import pending_returns, status_of
from tests.portal_support import portal_catalog
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def dlq_depth(settings, name: str) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def rows(site, sql: str, *args):
    async with site.db() as conn:
        return await conn.fetch(sql, *args)


async def test_dead_letters_purge_and_idempotent_replay(page, web_settings):
    async with running_console(web_settings, services=("returns",)) as site:
        settings = site.settings
        queue = f"{settings.namespace}.returns.commands"
        await site.apply_catalog(portal_catalog())
        await site.staff("otto@staff.test", "operator")
        await site.login(page, "otto@staff.test")

        # A real dead letter: not JSON, dead-lettered by the returns service with its row.
        await publish(
            settings.amqp_url, f"{settings.namespace}.events", "return.decide", b"not json {", message_id="bad-1"
        )

        async def recorded() -> bool:
            return bool(await rows(site, "SELECT id FROM dead_letters WHERE message_id = 'bad-1'"))

        await wait_for(recorded)
        await page.goto(f"{site.url}/dead-letters")
        figures = page.locator(f"#queues tr[data-queue='{queue}']")
        assert await figures.locator(".dlq-depth").inner_text() == "1"
        assert await figures.locator(".open-rows").inner_text() == "1"
        row = page.locator("#dead-letters tr[data-dead-letter]").first
        assert "not json {" in await row.locator(".body").inner_text()
        await row.locator("button:has-text('Purge')").click()
        assert "purged (and its DLQ copy)" in await page.inner_text("#done")
        assert await dlq_depth(settings, f"{queue}.dlq") == 0
        assert [r["resolution"] for r in await rows(site, "SELECT resolution FROM dead_letters")] == ["purged"]

        # A decision the returns service has already handled...
        first, second = await pending_returns(site, "acme", 2)
        handled = ReturnDecide(return_id=first, decision="approve", note="ok", decided_by="test", client_id="acme")
        message_id = str(uuid.uuid4())
        await publish(
            settings.amqp_url, f"{settings.namespace}.events", "return.decide", handled, message_id=message_id
        )
        await wait_for(partial(_status_is, site, first, "approved"))
        # ...then found as a dead letter (its copy in the DLQ and its row), as if it had failed
        # once on another replica.
        body = json.dumps(handled.model_dump(mode="json")).encode()
        headers = {"x-error": "simulated", "x-original-routing-key": "return.decide", "x-retry-count": 3}
        await publish(settings.amqp_url, "", f"{queue}.dlq", body, message_id=message_id, headers=headers)
        # And a decision that never reached the service, whose DLQ copy is gone: only its row.
        unhandled = ReturnDecide(return_id=second, decision="approve", note="ok", decided_by="test", client_id="acme")
        async with site.db() as conn:
            for mid, payload in ((message_id, body), ("m-2", json.dumps(unhandled.model_dump(mode="json")).encode())):
                await conn.execute(
                    "INSERT INTO dead_letters (queue, message_id, error, body, headers) VALUES ($1, $2, $3, $4, $5)",
                    queue,
                    mid,
                    "simulated failure",
                    payload,
                    {"x-original-routing-key": "return.decide", "x-error": "simulated failure"},
                )
        credits_before = await rows(site, "SELECT id FROM client_balance_entries")
        assert len(credits_before) == 1

        await page.goto(f"{site.url}/dead-letters?queue={queue}")
        await page.locator(f"#dead-letters tr:has(code:text-is('{message_id}')) button:has-text('Replay')").click()
        assert "replayed (body from the DLQ)" in await page.inner_text("#done")
        assert await dlq_depth(settings, f"{queue}.dlq") == 0
        await page.locator("#dead-letters tr:has(code:text-is('m-2')) button:has-text('Replay')").click()
        assert "replayed (body from the table)" in await page.inner_text("#done")
        # The unhandled one is applied now; the handled one, replayed first on the same queue,
        # changed nothing twice: still one credit, one decision.
        await wait_for(partial(_status_is, site, second, "approved"))
        credits = await rows(site, "SELECT return_id FROM client_balance_entries ORDER BY id")
        assert [r["return_id"] for r in credits] == [first, second]
        assert await status_of(site, first) == "approved"
        # Replaying a replayed dead letter again is refused (409), nothing sent.
        replayed = await rows(site, "SELECT id FROM dead_letters WHERE message_id = $1", message_id)
        answer = await page.request.post(
            f"{site.url}/dead-letters/{replayed[0]['id']}/replay",
            form={"csrf": await page.input_value("input[name=csrf]")},
        )
        assert answer.status == 409 and "replayed already" in await answer.text()
        audit = await rows(site, "SELECT action, target, actor FROM admin_audit ORDER BY id")
        assert [a["action"] for a in audit if a["action"].startswith("dead_letter")] == [
            "dead_letter.purge",
            "dead_letter.replay",
            "dead_letter.replay",
        ]
        # The API shows the same.
        async with site.client(await site.key("otto@staff.test")) as api:
            listing = (await api.get(f"{site.api}/dead-letters")).json()
            assert listing["open"] == []
            assert (await api.post(f"{site.api}/dead-letters/{replayed[0]['id']}/replay")).status_code == 409
            assert (await api.post(f"{site.api}/dead-letters/999999/purge")).status_code == 404


async def _status_is(site, return_id: uuid.UUID, status: str) -> bool:
    return await status_of(site, return_id) == status


def order_catalog() -> str:
    doc = yaml.safe_load(portal_catalog())
    doc["orders"] = [
        {"id": "acme-o1", "client": "acme", "type": "lead_quantity", "total": 50, "start_date": "2026-01-01"}
    ]
    return yaml.safe_dump(doc)


async def test_paused_accounts_and_orders(page, web_settings):
    async with running_console(web_settings, services=("returns",)) as site:
        await site.apply_catalog(order_catalog())
        await site.staff("otto@staff.test", "operator")
        async with site.db() as conn:
            await conn.execute(
                "INSERT INTO delivery_account_state (delivery_account_id, paused, paused_at, paused_reason,"
                " consecutive_failures) VALUES ('bolt-solar', true, now(), '10 failures in a row', 10)"
            )
        await site.login(page, "otto@staff.test")
        await page.goto(f"{site.url}/accounts")
        state = page.locator("tr[data-account='bolt-solar'] .state")
        assert "paused" in await state.inner_text() and "10 failures" in await state.inner_text()
        csrf = await page.input_value("input[name=csrf]")
        await page.click("tr[data-account='bolt-solar'] button:has-text('Resume')")
        assert "bolt-solar resumed" in await page.inner_text("#done")
        assert "active" in await page.inner_text("tr[data-account='bolt-solar'] .state")
        again = await page.request.post(f"{site.url}/accounts/bolt-solar/resume", form={"csrf": csrf})
        assert again.status == 409 and "not paused" in await again.text()

        await page.goto(f"{site.url}/orders")
        order = page.locator("tr[data-order='acme-o1']")
        await page.fill("#amount-acme-o1", "twelve")
        await order.locator("button:has-text('Record')").click()
        assert "Enter an amount above 0" in await page.inner_text("#amount-error")
        assert await page.input_value("#amount-acme-o1") == "twelve"
        await page.fill("#amount-acme-o1", "250.00")
        await page.fill("#note-acme-o1", "wire 77")
        await page.locator("tr[data-order='acme-o1'] button:has-text('Record')").click()
        assert "amount paid now 250.00" in await page.inner_text("#done")
        await page.locator("tr[data-order='acme-o1'] button:has-text('Pause')").click()
        assert "pause sent" in await page.inner_text("#done")

        async def paused() -> bool:
            found = await rows(site, "SELECT status FROM orders WHERE id = 'acme-o1'")
            return found[0]["status"] == "paused"

        await wait_for(paused)
        await page.goto(f"{site.url}/orders")
        assert await page.inner_text("tr[data-order='acme-o1'] .status") == "paused"
        actions = [a["action"] for a in await rows(site, "SELECT action FROM admin_audit ORDER BY id")]
        assert actions[-3:] == ["account.resume", "order.payment", "order.pause"]
        payments = await rows(site, "SELECT amount, note FROM order_payments")
        assert [(str(p["amount"]), p["note"]) for p in payments] == [("250.00", "wire 77")]
