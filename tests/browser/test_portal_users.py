"""Client Portal users (H4–H8) in a real browser: the admin-only Users page, "+New" user whose
invitation email (real SMTP) sets the password, editing flags and parent, disabling (signed out at
the next click), the last enabled admin protected, and nobody else's users reachable."""

from __future__ import annotations

import re

import pytest

from tests.portal_auth_support import PASSWORD
from tests.portal_support import running_site

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def _user(site, email):
    async with site.db() as conn:
        return await conn.fetchrow("SELECT * FROM portal_users WHERE email = $1", email)


async def test_h4_new_user_gets_an_invitation_that_sets_the_password(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        ann = await site.user("acme", "ann@acme.test", is_admin=True)
        await site.user("bolt", "taken@bolt.test", is_admin=True)
        await site.login(page, "ann@acme.test")
        await page.click("nav.sidebar a:has-text('Users')")
        await page.wait_for_url(f"{site.url}/users")
        assert "ann@acme.test" in await page.inner_text("#users")

        await page.click("#new-user")
        await page.wait_for_url(f"{site.url}/users/new")
        await page.fill("#user-name", "Nina New")
        await page.fill("#user-email", "not-an-address")
        await page.click("#user-form button[type=submit]")
        assert await page.inner_text("#user-email-error") == "Enter a valid email address, like name@example.com."
        assert await page.input_value("#user-name") == "Nina New"

        # An address another client's user has: portal_auth's conflict, beside the field.
        await page.fill("#user-email", "taken@bolt.test")
        await page.click("#user-form button[type=submit]")
        assert "already has a portal login" in await page.inner_text("#user-email-error")

        await page.fill("#user-email", "nina@acme.test")
        await page.select_option("#user-parent", str(ann))
        await page.check("#user-view-downline")
        await page.click("#user-form button[type=submit]")
        await page.wait_for_url(f"{site.url}/users?saved=created")
        assert "invitation" in await page.inner_text(".notice")
        row = page.locator("#users tr[data-email='nina@acme.test']")
        assert "Invited, not set yet" in await row.inner_text()
        nina = await _user(site, "nina@acme.test")
        assert (nina["name"], nina["parent_user_id"], nina["view_downline"], nina["is_admin"], nina["enabled"]) == (
            "Nina New",
            ann,
            True,
            False,
            True,
        )

        # The invitation (real SMTP) sets the password; the new user signs in with it.
        await site.emails(1)
        [mail] = smtp.to("nina@acme.test")
        link = re.search(r"https?://\S+/reset/(\S+)", mail.text())
        assert link is not None
        context = await browser.new_context()
        try:
            invited = await context.new_page()
            await invited.goto(f"{site.url}/reset/{link.group(1)}")
            await invited.fill("#password", "nina's own passphrase")
            await invited.fill("#confirm", "nina's own passphrase")
            await invited.click("button[type=submit]")
            await invited.wait_for_url(re.compile(r".*/login\?reason=password_set"))
            await site.login(invited, "nina@acme.test", "nina's own passphrase")
            # Not an admin: no Users page, and its addresses are 404.
            assert "Users" not in await invited.inner_text("nav.sidebar")
            for path in ("/users", "/users/new", f"/users/{ann}"):
                response = await invited.goto(f"{site.url}{path}")
                assert response is not None and response.status == 404, path
        finally:
            await context.close()
        await page.goto(f"{site.url}/users")
        assert "Set" in await page.locator("#users tr[data-email='nina@acme.test'] td").nth(6).inner_text()


async def test_h5_h8_editing_disabling_and_the_last_admin(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        ann = await site.user("acme", "ann@acme.test", is_admin=True)
        sam = await site.user("acme", "sam@acme.test")
        bea = await site.user("bolt", "bea@bolt.test", is_admin=True)
        await site.login(page, "ann@acme.test")

        # Another client's user, or no user at all: 404.
        for path in (f"/users/{bea}", "/users/not-a-uuid", "/users/00000000-0000-0000-0000-000000000000"):
            response = await page.goto(f"{site.url}{path}")
            assert response is not None and response.status == 404, path
        response = await page.goto(f"{site.url}/users/{ann}")
        csrf = await page.get_attribute("#user-form input[name=csrf]", "value")
        forged = await page.request.post(
            f"{site.url}/users/{bea}", form={"csrf": csrf or "", "name": "Owned"}, headers={"Origin": site.origin}
        )
        assert forged.status == 404
        assert (await _user(site, "bea@bolt.test"))["name"] != "Owned"

        # The last enabled admin cannot demote or disable herself.
        await page.uncheck("#user-is-admin")
        await page.click("#user-form button[type=submit]")
        assert "at least one enabled admin" in await page.inner_text(".form-error")
        await page.check("#user-is-admin")
        await page.uncheck("#user-enabled")
        await page.click("#user-form button[type=submit]")
        assert "at least one enabled admin" in await page.inner_text(".form-error")
        row = await _user(site, "ann@acme.test")
        assert row["is_admin"] and row["enabled"]

        # Sam signs in elsewhere; the admin edits him, then disables him: his next click signs him out.
        context = await browser.new_context()
        try:
            other = await context.new_page()
            await site.login(other, "sam@acme.test")
            await page.goto(f"{site.url}/users/{sam}")
            await page.fill("#user-name", "Sam Renamed")
            await page.select_option("#user-parent", str(ann))
            await page.check("#user-view-downline")
            await page.click("#user-form button[type=submit]")
            await page.wait_for_url(f"{site.url}/users/{sam}?saved=saved")
            assert await page.inner_text(".notice") == "The user is saved."
            row = await _user(site, "sam@acme.test")
            assert (row["name"], row["parent_user_id"], row["view_downline"]) == ("Sam Renamed", ann, True)
            await other.goto(f"{site.url}/leads")
            assert other.url.startswith(f"{site.url}/leads")  # an edit does not sign him out

            await page.uncheck("#user-enabled")
            await page.click("#user-form button[type=submit]")
            await page.wait_for_url(f"{site.url}/users/{sam}?saved=saved")
            await other.goto(f"{site.url}/leads")
            assert other.url.startswith(f"{site.url}/login")
            await other.fill("#email", "sam@acme.test")
            await other.fill("#password", PASSWORD)
            await other.click("button[type=submit]")
            assert "disabled" in await other.inner_text(".form-error")

            # Clearing the parent.
            await page.select_option("#user-parent", "")
            await page.click("#user-form button[type=submit]")
            await page.wait_for_url(f"{site.url}/users/{sam}?saved=saved")
            assert (await _user(site, "sam@acme.test"))["parent_user_id"] is None

            # A second admin: now the first may step down.
            await page.goto(f"{site.url}/users/{sam}")
            await page.check("#user-enabled")
            await page.check("#user-is-admin")
            await page.click("#user-form button[type=submit]")
            await page.wait_for_url(f"{site.url}/users/{sam}?saved=saved")
            await page.goto(f"{site.url}/users/{ann}")
            await page.uncheck("#user-is-admin")
            await page.click("#user-form button[type=submit]")
            await page.wait_for_url(f"{site.url}/dashboard")  # no longer an admin: the Users page is gone
            assert not (await _user(site, "ann@acme.test"))["is_admin"]
        finally:
            await context.close()
