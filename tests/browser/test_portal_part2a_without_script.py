"""Returns, files and orders work with JavaScript turned off in the browser: every action is a
plain HTML form (the CSRF token in a hidden field)."""

from __future__ import annotations

import pytest
import yaml

from tests.portal_support import person, portal_catalog, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_return_attach_and_pause_without_javascript(browser, web_settings, smtp, tmp_path):
    doc = yaml.safe_load(portal_catalog())
    doc["orders"] = [
        {"id": "acme-q1", "client": "acme", "type": "lead_quantity", "total": "100", "start_date": "2026-01-01"}
    ]
    context = await browser.new_context(java_script_enabled=False)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    try:
        async with running_site(
            web_settings, smtp, services=("portal_auth", "returns"), catalog=yaml.safe_dump(doc)
        ) as site:
            await site.user("acme", "ann@acme.test", is_admin=True)
            async with site.db() as conn:
                leads = [await sell(conn, "acme", person(n)) for n in range(10)]
            await site.login(page, "ann@acme.test")

            await page.goto(f"{site.url}/leads/{leads[0]}")
            await page.click("#return-lead")
            await page.select_option("#return-reason", "wrong_number")
            await page.click("#return-form button[type=submit]")
            await page.wait_for_url("**/return?return_id=*")
            assert await page.get_attribute("#return-outcome", "data-kind") == "accepted"

            await page.goto(f"{site.url}/leads/{leads[0]}")
            await page.click("#lead-files")
            path = tmp_path / "quote.pdf"
            path.write_bytes(b"%PDF-1.4\nno script needed\n%%EOF\n")
            await page.set_input_files("#file", str(path))
            await page.click("#upload-form button[type=submit]")
            await page.wait_for_url("**/files?done=uploaded")
            assert await page.locator("#files-table td.name").all_inner_texts() == ["quote.pdf"]

            await page.goto(f"{site.url}/orders")
            await page.click("tr[data-order='acme-q1'] button")
            await page.wait_for_url("**/orders?done=paused&order=acme-q1")
            async with site.db() as conn:
                assert await conn.fetchval("SELECT status FROM orders WHERE id = 'acme-q1'") == "paused"
                assert await conn.fetchval("SELECT count(*) FROM returns") == 1
                assert await conn.fetchval("SELECT count(*) FROM lead_files") == 1
    finally:
        await context.close()
