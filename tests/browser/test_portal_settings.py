"""Client Portal settings (H1–H3) in a real browser: contact details, the new-lead notification
switch, changing the password (which ends the user's other sessions, not this one) and signing out
everywhere — each a command to portal_auth, each form refused without its CSRF token."""

from __future__ import annotations

import pytest

from tests.portal_auth_support import PASSWORD
from tests.portal_support import running_site

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

NEW_PASSWORD = "a brand new passphrase"


async def _row(site, email):
    async with site.db() as conn:
        return await conn.fetchrow("SELECT * FROM portal_users WHERE email = $1", email)


async def test_h1_h2_contact_details_and_the_notification_switch(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        await site.user("acme", "sam@acme.test")
        await site.login(page, "sam@acme.test")

        # The avatar menu leads there.
        await page.click(".avatar-menu summary")
        await page.click(".avatar-menu a:has-text('Settings')")
        await page.wait_for_url(f"{site.url}/settings")
        assert await page.inner_text("h1") == "Settings"
        assert "sam@acme.test" in await page.inner_text("#contact")

        await page.fill("#contact-name", "Sam Seller")
        await page.fill("#contact-phone", "not a phone!")
        await page.click("#contact button[type=submit]")
        assert (
            await page.inner_text("#contact-phone-error") == "A phone number has digits, spaces and + ( ) - . / x only."
        )
        assert await page.input_value("#contact-name") == "Sam Seller"  # kept
        assert (await _row(site, "sam@acme.test"))["name"] == "sam"  # nothing written

        await page.fill("#contact-phone", "+1 (415) 555-0199")
        await page.click("#contact button[type=submit]")
        assert await page.inner_text(".notice") == "Your contact details are saved."
        assert await page.input_value("#contact-name") == "Sam Seller"
        assert await page.input_value("#contact-phone") == "+1 (415) 555-0199"
        row = await _row(site, "sam@acme.test")
        assert (row["name"], row["phone"]) == ("Sam Seller", "+1 (415) 555-0199")
        assert await page.inner_text(".topbar .user-name") == "Sam Seller"

        # H2: the switch, on and off again; the page says what a user of this scope is told about.
        assert "assigned to you" in await page.inner_text("#notifications")
        assert not await page.is_checked("#notify-new-leads")
        await page.check("#notify-new-leads")
        await page.click("#notifications button[type=submit]")
        assert await page.inner_text(".notice") == "Your notification setting is saved."
        assert await page.is_checked("#notify-new-leads")
        assert (await _row(site, "sam@acme.test"))["notify_new_leads"] is True
        await page.uncheck("#notify-new-leads")
        await page.click("#notifications button[type=submit]")
        assert not await page.is_checked("#notify-new-leads")
        assert (await _row(site, "sam@acme.test"))["notify_new_leads"] is False

        # Without the CSRF token nothing changes.
        response = await page.request.post(
            f"{site.url}/settings/contact", form={"name": "Mallory", "phone": ""}, headers={"Origin": site.origin}
        )
        assert response.status == 403
        assert (await _row(site, "sam@acme.test"))["name"] == "Sam Seller"


async def test_h3_changing_the_password_ends_the_other_sessions_not_this_one(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        other_context = await browser.new_context()
        other = await other_context.new_page()
        try:
            await site.login(other, "ann@acme.test")
            await site.login(page, "ann@acme.test")
            await page.goto(f"{site.url}/settings")

            await page.fill("#current-password", "wrong password here")
            await page.fill("#new-password", NEW_PASSWORD)
            await page.fill("#confirm-password", NEW_PASSWORD)
            await page.click("#password button[type=submit]")
            assert await page.inner_text("#current-password-error") == "That is not your current password."

            await page.fill("#current-password", PASSWORD)
            await page.fill("#new-password", NEW_PASSWORD)
            await page.fill("#confirm-password", NEW_PASSWORD + "x")
            await page.click("#password button[type=submit]")
            assert await page.inner_text("#confirm-password-error") == "The two passwords are not the same."

            await page.fill("#current-password", PASSWORD)
            await page.fill("#new-password", "short")
            await page.fill("#confirm-password", "short")
            await page.click("#password button[type=submit]")
            assert "10" in await page.inner_text("#new-password-error")  # portal_auth's policy, beside the field

            await page.fill("#current-password", PASSWORD)
            await page.fill("#new-password", NEW_PASSWORD)
            await page.fill("#confirm-password", NEW_PASSWORD)
            await page.click("#password button[type=submit]")
            assert await page.inner_text(".notice") == (
                "Your password is changed. Your other sessions have ended; this one goes on."
            )
            # This session goes on; the other one is sent to sign in at its next click.
            await page.goto(f"{site.url}/leads")
            assert page.url.startswith(f"{site.url}/leads")
            await other.goto(f"{site.url}/leads")
            assert other.url.startswith(f"{site.url}/login")
            assert "Your session has ended" in await other.inner_text("main, body")
            await site.login(other, "ann@acme.test", NEW_PASSWORD)
        finally:
            await other_context.close()


async def test_sign_out_everywhere_from_settings(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        other_context = await browser.new_context()
        other = await other_context.new_page()
        try:
            await site.login(other, "ann@acme.test")
            await site.login(page, "ann@acme.test")
            await page.goto(f"{site.url}/settings")
            await page.click("#sessions button[type=submit]")
            await page.wait_for_url(f"{site.url}/login?reason=signed_out")
            await other.goto(f"{site.url}/dashboard")
            assert other.url.startswith(f"{site.url}/login")
            await page.goto(f"{site.url}/settings")
            assert page.url.startswith(f"{site.url}/login")
        finally:
            await other_context.close()
