"""Bulk replay and purge of dead letters in a real browser, with the returns service running:
the checked ones replayed (under their own message ids: one already handled changes nothing
twice), then every open one of the queue purged; each recorded in the audit, one by one and as a
bulk; no choice is an error beside the list; a viewer's key is refused."""

from __future__ import annotations

import json
import uuid
from functools import partial

import pytest

from harness.broker import publish
from shared.contracts import ReturnDecide
from tests.admin_support import running_console
from tests.browser.test_admin_operations import dlq_depth, rows
from tests.browser.test_admin_returns import pending_returns, status_of
from tests.portal_support import portal_catalog
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_bulk_replay_and_purge(page, web_settings):
    async with running_console(web_settings, services=("returns",)) as site:
        settings = site.settings
        queue = f"{settings.namespace}.returns.commands"
        await site.apply_catalog(portal_catalog())
        await site.staff("otto@staff.test", "operator")
        await site.staff("vic@staff.test", "viewer")
        first, second, third = await pending_returns(site, "acme", 3)
        handled = ReturnDecide(return_id=first, decision="approve", note="ok", decided_by="t", client_id="acme")
        handled_id = str(uuid.uuid4())
        await publish(
            settings.amqp_url, f"{settings.namespace}.events", "return.decide", handled, message_id=handled_id
        )
        await wait_for(partial(_status_is, site, first, "approved"))

        # Three dead letters, each with its DLQ copy and its row: the handled decision (as if it
        # had failed once on another replica) and two never applied.
        letters = {
            handled_id: handled,
            "m-2": ReturnDecide(return_id=second, decision="approve", note="ok", decided_by="t", client_id="acme"),
            "m-3": ReturnDecide(return_id=third, decision="approve", note="ok", decided_by="t", client_id="acme"),
        }
        headers = {"x-error": "simulated", "x-original-routing-key": "return.decide"}
        async with site.db() as conn:
            for mid, command in letters.items():
                body = json.dumps(command.model_dump(mode="json")).encode()
                await publish(settings.amqp_url, "", f"{queue}.dlq", body, message_id=mid, headers=headers)
                await conn.execute(
                    "INSERT INTO dead_letters (queue, message_id, error, body, headers) VALUES ($1, $2, $3, $4, $5)",
                    queue,
                    mid,
                    "simulated failure",
                    body,
                    headers,
                )
        ids = {r["message_id"]: r["id"] for r in await rows(site, "SELECT id, message_id FROM dead_letters")}

        await site.login(page, "otto@staff.test")
        await page.goto(f"{site.url}/dead-letters?queue={queue}")
        await page.click("#bulk-replay")  # nothing checked
        assert "Choose at least one" in await page.inner_text("#ids-error")
        await page.goto(f"{site.url}/dead-letters?queue={queue}")
        await page.check(f"input[name=ids][value='{ids[handled_id]}']")
        await page.check(f"input[name=ids][value='{ids['m-2']}']")
        await page.click("#bulk-replay")
        assert "2 dead letters replayed" in await page.inner_text("#done")
        await wait_for(partial(_status_is, site, second, "approved"))
        # The handled one changed nothing twice: one credit each for the first two returns.
        credits = await rows(site, "SELECT return_id FROM client_balance_entries ORDER BY id")
        assert [r["return_id"] for r in credits] == [first, second]

        # Every open one of the queue (the third), purged: never applied.
        await page.check("#bulk-all")
        await page.click("#bulk-purge")
        assert "1 dead letters purged" in await page.inner_text("#done")
        assert await dlq_depth(settings, f"{queue}.dlq") == 0
        assert await status_of(site, third) == "pending"
        resolutions = {r["message_id"]: r["resolution"] for r in await rows(site, "SELECT * FROM dead_letters")}
        assert resolutions == {handled_id: "replayed", "m-2": "replayed", "m-3": "purged"}
        audit = [r["action"] for r in await rows(site, "SELECT action FROM admin_audit ORDER BY id")]
        assert [a for a in audit if a.startswith("dead_letter")] == [
            "dead_letter.replay",
            "dead_letter.replay",
            "dead_letter.bulk_replay",
            "dead_letter.purge",
            "dead_letter.bulk_purge",
        ]

        async with site.client(await site.key("vic@staff.test")) as reader:
            refused = await reader.post(f"{site.api}/dead-letters/bulk", json={"action": "replay", "queue": queue})
            assert refused.status_code == 403
        async with site.client(await site.key("otto@staff.test")) as api:
            answer = await api.post(f"{site.api}/dead-letters/bulk", json={"action": "replay", "ids": [ids["m-2"]]})
            assert answer.status_code == 200
            assert answer.json() == {
                "done": [],
                "skipped": [{"id": ids["m-2"], "reason": answer.json()["skipped"][0]["reason"]}],
            }
            assert "replayed already" in answer.json()["skipped"][0]["reason"]
            bad = await api.post(f"{site.api}/dead-letters/bulk", json={"action": "purge", "queue": "nope"})
            assert bad.status_code == 400 and "queue" in bad.json()["errors"]


async def _status_is(site, return_id: uuid.UUID, status: str) -> bool:
    return await status_of(site, return_id) == status
