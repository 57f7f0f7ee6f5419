"""Clients in a real browser: edit a client and add one (new catalog versions through the catalog's
validation, errors beside the fields, nothing saved on error), and invite a client's first portal
admin, whose invitation email arrives through the real notifier."""

from __future__ import annotations

import pytest

from tests.admin_support import running_console
from tests.portal_support import portal_catalog
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def version_of(site) -> int:
    async with site.db() as conn:
        return int(await conn.fetchval("SELECT max(version) FROM catalog_versions"))


async def test_edit_and_add_clients_and_invite_the_first_portal_admin(page, mail_settings, smtp):
    async with running_console(mail_settings, services=("notifier",)) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("ada@staff.test", "admin")
        await site.login(page, "ada@staff.test")
        await page.goto(f"{site.url}/clients")
        await page.click("tr[data-client='acme'] a")
        assert await page.input_value("#name") == "Acme Solar"

        # Bad input: errors beside the fields, what was typed kept, nothing saved.
        await page.fill("#name", "")
        await page.fill("#time_zone", "Mars/Olympus")
        await page.click("#client-form button[type=submit]")
        assert "Enter a name" in await page.inner_text("#name-error")
        assert "unknown time zone 'Mars/Olympus'" in await page.inner_text("#time_zone-error")
        assert await page.input_value("#time_zone") == "Mars/Olympus"
        assert await version_of(site) == 1

        await page.fill("#name", "Acme Solar Inc")
        await page.fill("#time_zone", "America/Denver")
        await page.fill("#contact_name", "Rita")
        await page.uncheck("#active")
        await page.click("#client-form button[type=submit]")
        assert "Saved as catalog version 2" in await page.inner_text("#saved")
        async with site.db() as conn:
            row = await conn.fetchrow("SELECT name, active, time_zone FROM clients WHERE id = 'acme'")
            assert (row["name"], row["active"], row["time_zone"]) == ("Acme Solar Inc", False, "America/Denver")
            audit = await conn.fetchrow("SELECT detail FROM admin_audit WHERE action = 'client.change'")
            assert audit["detail"]["changes"]["name"] == ["Acme Solar", "Acme Solar Inc"]

        # A new client: a taken id is refused beside the id.
        await page.goto(f"{site.url}/clients/new")
        await page.fill("#id", "bolt")
        await page.fill("#name", "Another Bolt")
        await page.click("#client-form button[type=submit]")
        assert "duplicate id 'bolt'" in await page.inner_text("#id-error")
        await page.fill("#id", "cody")
        await page.click("#client-form button[type=submit]")
        assert "Saved as catalog version 3" in await page.inner_text("#saved")

        # The first portal admin of the new client, invited by email.
        await page.fill("#invite_email", "not an email")
        await page.click("#invite-form button[type=submit]")
        assert "valid email" in await page.inner_text("#invite_email-error")
        await page.fill("#invite_email", "owner@cody.example")
        await page.fill("#invite_name", "Cody Owner")
        await page.click("#invite-form button[type=submit]")
        assert "Invited owner@cody.example" in await page.inner_text("#saved")
        assert "invited" in await page.inner_text("#portal-users")
        assert await page.locator("#invite-form").count() == 0
        await wait_for(lambda: len(smtp.received) >= 1, timeout=20)
        email = smtp.received[0]
        assert "owner@cody.example" in str(email)
        async with site.db() as conn:
            user = await conn.fetchrow("SELECT is_admin, password_hash FROM portal_users WHERE client_id = 'cody'")
            assert user["is_admin"] and user["password_hash"] is None
            assert await conn.fetchval("SELECT count(*) FROM admin_audit WHERE action = 'client.invite_admin'") == 1
