"""Buyers' delivery credentials in a real browser: a viewer and an operator see them masked on
the account's page, in a version's diff and its YAML download, and in the catalog editor; an
admin's save of the form (and of the editor's text) that shows the masks keeps every stored
secret unchanged."""

from __future__ import annotations

import pytest

from services.admin.masking import MASK
from tests.admin_support import running_console
from tests.integration.test_admin_secrets import SECRETS, secret_catalog, stored_delivery

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def assert_masked(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert MASK in text


async def test_credentials_are_masked_on_every_page_and_a_save_keeps_them(page, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(secret_catalog())
        await site.staff("vera@staff.test", "viewer")
        await site.staff("otto@staff.test", "operator")
        await site.staff("ada@staff.test", "admin")
        original = await stored_delivery(site)

        await site.login(page, "ada@staff.test")
        await page.goto(f"{site.url}/accounts/acme-solar")
        assert_masked(await page.content())
        headers = (await page.input_value("#delivery-headers")).splitlines()
        assert sorted(headers) == ["Accept: application/json", f"X-Partner: {MASK}"]
        assert f"api_key={MASK}" in await page.input_value("#delivery-url")
        assert await page.input_value("#delivery-auth-password") == ""
        # The form as shown, one setting changed: a new version, every secret as it was.
        await page.fill("#price", "26.00")
        await page.click("#entry-form button[type=submit]")
        assert "Saved as catalog version 2" in await page.inner_text("#saved")
        assert await stored_delivery(site) == original
        # The catalog editor: its text masked; saved as shown it changes nothing.
        await page.goto(f"{site.url}/catalog/edit")
        assert_masked(await page.input_value("#yaml"))
        await page.click("#catalog-form button[type=submit]")
        assert "saved=unchanged" in page.url
        assert await stored_delivery(site) == original

        # Version 3 changes a secret and the price: its diff shows the price, never a value.
        changed = secret_catalog().replace("partner-key-4411", "partner-key-4412").replace("25.00", "27.00")
        assert await site.apply_catalog(changed) == 3
        for email in ("vera@staff.test", "otto@staff.test"):
            await page.context.clear_cookies()
            await site.login(page, email)
            await page.goto(f"{site.url}/accounts/acme-solar")
            html = await page.content()
            assert_masked(html)
            assert "partner-key-4412" not in html
            await page.goto(f"{site.url}/catalog/versions/3")
            html = await page.content()
            assert "27.00" in html  # the diff is there
            assert "partner-key-44" not in html and "basic-pass-4411" not in html
            download = await page.request.get(f"{site.url}/catalog/versions/3/catalog.yaml")
            assert download.status == 200
            text = await download.text()
            assert_masked(text)
            assert "partner-key-4412" not in text
            await page.goto(f"{site.url}/catalog/edit")
            assert_masked(await page.input_value("#yaml"))
