"""Admin console in a real browser: staff sign-in (errors beside the fields, throttling), what a
viewer sees, staff users and API keys (shown once), bad input on those forms, the audit page."""

from __future__ import annotations

import pytest

from tests.admin_support import running_console
from tests.integration.test_admin_roles import CATALOG

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_sign_in_errors_throttling_and_sign_out(page, web_settings):
    async with running_console(web_settings) as site:
        await site.staff("owner@staff.test", "owner")
        await page.goto(f"{site.url}/audit?action=staff.create")
        assert page.url.startswith(f"{site.url}/login")
        await page.click("button[type=submit]")
        assert "Enter your email address." in await page.inner_text("#email-error")
        assert "Enter your password." in await page.inner_text("#password-error")
        assert await page.get_attribute("#email", "aria-invalid") == "true"
        # Wrong password: one message for the form, the email kept.
        await page.fill("#email", "owner@staff.test")
        await page.fill("#password", "not the password")
        await page.click("button[type=submit]")
        assert "do not match" in await page.inner_text(".form-error")
        assert await page.input_value("#email") == "owner@staff.test"
        # The right password signs in and goes where the visitor was going.
        await page.fill("#password", "staff password 1")
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{site.url}/audit?action=staff.create")
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["lw_staff_session"]["httpOnly"] and cookies["lw_staff_session"]["path"] == "/admin"
        await page.goto(f"{site.url}/")
        assert await page.inner_text("#my-role") == "owner"
        await page.click("text=Sign out")
        await page.wait_for_url(f"{site.url}/login?reason=signed_out")
        await page.goto(f"{site.url}/")
        assert page.url.startswith(f"{site.url}/login")

        # Failures past the free ones are throttled (fast_config: 2 free, then 30 s).
        await site.staff("viewer@staff.test", "viewer")
        for _ in range(2):
            await page.fill("#email", "viewer@staff.test")
            await page.fill("#password", "wrong wrong wrong")
            await page.click("button[type=submit]")
        await page.fill("#email", "viewer@staff.test")
        await page.fill("#password", "staff password 1")
        await page.click("button[type=submit]")
        assert "Too many failed attempts" in await page.inner_text(".form-error")


async def test_staff_users_and_api_keys(page, web_settings):
    async with running_console(web_settings) as site:
        await site.staff("owner@staff.test", "owner")
        await site.login(page, "owner@staff.test")
        await page.goto(f"{site.url}/staff")
        # Bad input: every error beside its field, nothing created.
        await page.fill("#email", "not-an-email")
        await page.select_option("#role", "operator")
        await page.fill("#password", "short")
        await page.click("#new-staff button[type=submit]")
        assert "valid email" in await page.inner_text("#email-error")
        assert "at least 10 characters" in await page.inner_text("#password-error")
        assert await page.input_value("#email") == "not-an-email"
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM staff_users") == 1
        await page.fill("#email", "olga@staff.test")
        await page.fill("#password", "olga's long password")
        await page.click("#new-staff button[type=submit]")
        await page.wait_for_selector("tr[data-email='olga@staff.test']")
        # The same email again is refused beside the field.
        await page.fill("#email", "OLGA@staff.test")
        await page.fill("#password", "olga's long password")
        await page.click("#new-staff button[type=submit]")
        assert "exists already" in await page.inner_text("#email-error")

        # The last owner cannot demote themselves: refused beside the role, nothing changed.
        me = page.locator("tr[data-email='owner@staff.test']")
        await me.locator("select[name=role]").select_option("viewer")
        await me.locator("button:has-text('Save')").click()
        assert "one enabled owner" in await page.inner_text("tr[data-email='owner@staff.test'] p.error")
        async with site.db() as conn:
            assert await conn.fetchval("SELECT role FROM staff_users WHERE email = 'owner@staff.test'") == "owner"

        # An API key is shown once; the list shows only its id.
        await page.goto(f"{site.url}/api-keys")
        await page.click("#new-key-form button[type=submit]")
        assert "Name the key" in await page.inner_text("#name-error")
        await page.fill("#name", "nightly export")
        await page.select_option("#role", "viewer")
        await page.click("#new-key-form button[type=submit]")
        key = await page.inner_text("#new-key")
        assert key.startswith("lw_staff_")
        async with site.client(key) as api:
            assert (await api.get(f"{site.api}/me")).json()["role"] == "viewer"
        await page.goto(f"{site.url}/api-keys")
        assert key not in await page.content()
        assert "never" not in await page.inner_text("td.last-used")
        await page.click("#keys button:has-text('Revoke')")
        await page.wait_for_selector("text=by owner@staff.test")
        async with site.client(key) as api:
            assert (await api.get(f"{site.api}/me")).status_code == 401

        await page.goto(f"{site.url}/audit")
        text = await page.inner_text("#audit")
        assert "api_key.revoke" in text and "api_key.create" in text and "staff.create" in text
        await page.goto(f"{site.url}/audit?before=abc")
        assert "not valid" in await page.inner_text("#before-error")


async def test_a_viewer_sees_everything_and_no_form_to_change_it(page, web_settings):
    async with running_console(web_settings) as site:
        await site.staff("viewer@staff.test", "viewer")
        await site.login(page, "viewer@staff.test")
        await site.apply_catalog(CATALOG)
        pages = ["/", "/staff", "/api-keys", "/audit", "/clients", "/clients/acme", "/options", "/catalog/versions"]
        pages += ["/catalog/versions/1", "/catalog/edit", "/returns", "/leads", "/dead-letters", "/accounts", "/orders"]
        for path in pages:
            response = await page.goto(f"{site.url}{path}")
            assert response is not None and response.status == 200, path
            buttons = await page.eval_on_selector_all(
                "main form[method=post] button", "buttons => buttons.map(b => b.textContent)"
            )
            assert buttons == [], (path, buttons)
