"""The lead's status in the buyer's own pipeline (the "Status" panel), in a real browser: set with
a note, shown with who set it; the same row the buyer API writes; bad input answered beside the
field with nothing changed; a lead outside the user's scope or client is 404."""

from __future__ import annotations

import pytest

from shared import dispositions
from tests.portal_support import person, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def _row(site, client_id, lead_id):
    async with site.db() as conn:
        return await conn.fetchrow(
            "SELECT disposition, note, updated_by FROM buyer_lead_dispositions WHERE client_id = $1 AND lead_id = $2",
            client_id,
            lead_id,
        )


async def test_a_user_sets_the_status_of_a_lead_and_sees_what_the_buyer_api_set(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        admin = await site.user("acme", "ada@acme.test", is_admin=True)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1, first_name="Statused"))
            api_lead = await sell(conn, "acme", person(2, first_name="Api"))
            await dispositions.set_disposition(conn, "acme", api_lead, "quoted", "sent a quote", "api-key:k1")

        await site.login(page, "ada@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        assert await page.inner_text("#disposition-now") == "No status yet."
        await page.select_option("#disposition-choice", "contacted")
        await page.fill("#disposition-note-input", "Called, call back Friday\nafter 5")
        await page.click("#disposition button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=disposition")
        assert await page.inner_text(".notice") == "The lead's status is saved."
        now = await page.inner_text("#disposition-now")
        assert now.startswith("Contacted") and "set by ada" in now
        assert await page.inner_text("#disposition-note") == "Called, call back Friday\nafter 5"
        row = await _row(site, "acme", lead)
        assert (row["disposition"], row["note"], row["updated_by"]) == (
            "contacted",
            "Called, call back Friday\nafter 5",
            f"portal-user:{admin}",
        )
        # Changed again: the last write wins, one row.
        await page.select_option("#disposition-choice", "won")
        await page.click("#disposition button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=disposition")
        assert (await _row(site, "acme", lead))["disposition"] == "won"

        # What the buyer API set shows here, and who set it.
        await page.goto(f"{site.url}/leads/{api_lead}")
        now = await page.inner_text("#disposition-now")
        assert now.startswith("Quoted") and "set by the buyer API" in now
        assert await page.input_value("#disposition-choice") == "quoted"
        assert await page.inner_text("#disposition-note") == "sent a quote"


async def test_bad_status_input_is_answered_beside_the_field_and_changes_nothing(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        csrf = await page.get_attribute("#disposition input[name=csrf]", "value") or ""
        for form, field_id in (
            ({"disposition": "bogus"}, "#disposition-choice-error"),
            ({"disposition": ""}, "#disposition-choice-error"),
            ({"disposition": "won", "note": "x" * (dispositions.MAX_NOTE + 1)}, "#disposition-note-error"),
            ({"disposition": "won", "note": "nul\x00here"}, "#disposition-note-error"),
        ):
            answer = await page.request.post(f"{site.url}/leads/{lead}/disposition", form={"csrf": csrf, **form})
            assert answer.status == 400, form
            await page.set_content(await answer.text())
            assert await page.locator(field_id).count() == 1, form
            assert await _row(site, "acme", lead) is None
        # In the browser: nothing chosen → the message beside the select, the typed note kept.
        await page.goto(f"{site.url}/leads/{lead}")
        await page.fill("#disposition-note-input", "kept")
        await page.click("#disposition button[type=submit]")
        assert "Choose one of" in await page.inner_text("#disposition-choice-error")
        assert await page.input_value("#disposition-note-input") == "kept"
        # Without the CSRF token: refused.
        answer = await page.request.post(f"{site.url}/leads/{lead}/disposition", form={"disposition": "won"})
        assert answer.status == 403
        assert await _row(site, "acme", lead) is None


async def test_status_of_a_lead_outside_the_users_scope_or_client_is_404(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        await site.user("acme", "eve@acme.test")  # scope own: sees only leads assigned to her
        async with site.db() as conn:
            unassigned = await sell(conn, "acme", person(1))
            theirs = await sell(conn, "bolt", person(2))
        await site.login(page, "eve@acme.test")
        await page.goto(f"{site.url}/leads")
        csrf = await page.get_attribute("input[name=csrf]", "value") or ""
        for lead in (unassigned, theirs, "not-a-uuid"):
            answer = await page.request.post(
                f"{site.url}/leads/{lead}/disposition", form={"csrf": csrf, "disposition": "won"}
            )
            assert answer.status == 404, lead
        assert await _row(site, "acme", unassigned) is None
        assert await _row(site, "bolt", theirs) is None
