"""The portal's API keys page in a real browser: an admin creates a buyer API key (shown once,
stored as its SHA-256), the key works against the buyer API for this client only, and revoking it
stops it at once; non-admins and other clients' keys get 404."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from services.intake.web import create_app as create_intake
from shared import api_keys
from tests.portal_support import running_site
from tests.web_support import serve

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_an_admin_creates_a_buyer_key_once_and_revokes_it(page, web_settings, smtp):
    async with running_site(web_settings, smtp) as site, serve(create_intake(web_settings)) as intake:
        await site.user("acme", "ann@acme.test", is_admin=True)
        await site.user("acme", "sam@acme.test")
        bolt_key = None
        async with site.db() as conn:
            bolt_key = await api_keys.create_buyer_key(conn, "bolt", label="bolt's")
        await site.login(page, "ann@acme.test")
        await page.click("summary")
        await page.click("a[role=menuitem]:has-text('API keys')")
        await page.wait_for_url(f"{site.url}/api-keys")
        assert "No keys yet" in await page.inner_text("#keys")
        assert bolt_key.key_id not in await page.content()

        # No name: the error beside the field, nothing created.
        await page.click("#key-form button[type=submit]")
        assert "name of 1 to 100" in await page.inner_text("#key-label-error")
        await page.fill("#key-label", "CRM sync")
        await page.click("#key-form button[type=submit]")
        token = (await page.inner_text("#new-key-token")).strip()
        assert token.startswith("lwbk.")
        async with site.db() as conn:
            stored = await conn.fetchrow("SELECT * FROM buyer_api_keys WHERE client_id = 'acme'")
        assert stored["token_sha256"] == hashlib.sha256(token.encode()).digest()
        assert stored["created_by"].startswith("portal:")
        # Shown once: the list page never shows it again.
        await page.goto(f"{site.url}/api-keys")
        assert token not in await page.content()
        assert "CRM sync" in await page.inner_text("#keys")

        async with httpx.AsyncClient(base_url=intake, headers={"Authorization": f"Bearer {token}"}) as http:
            assert (await http.get("/v1/buyer/leads")).status_code == 200
            await page.click(f"#keys tr[data-key='{stored['key_id']}'] button:has-text('Revoke')")
            await page.wait_for_url(f"{site.url}/api-keys?saved=revoked")
            assert "Revoked" in await page.inner_text(f"#keys tr[data-key='{stored['key_id']}']")
            assert (await http.get("/v1/buyer/leads")).status_code == 401

        # Another client's key cannot be revoked from here; a non-admin has no such page.
        response = await page.request.post(f"{site.url}/api-keys/{bolt_key.key_id}/revoke", form={"csrf": "x"})
        assert response.status in (403, 404)
        await page.context.clear_cookies()
        await site.login(page, "sam@acme.test")
        response = await page.goto(f"{site.url}/api-keys")
        assert response is not None and response.status == 404
