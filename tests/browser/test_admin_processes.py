"""The Processes page: every service process reports the catalog version it has loaded
(shared/service.py, every 5 s); a new catalog version reaches each, a process that stopped
reporting shows as stale, and the API says the same."""

from __future__ import annotations

import pytest

from tests.admin_support import running_console
from tests.portal_support import portal_catalog
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def reported(site) -> dict[str, int]:
    async with site.db() as conn:
        rows = await conn.fetch(
            "SELECT service, catalog_version FROM process_heartbeats WHERE seen_at > now() - '20 s'::interval"
        )
    return {r["service"]: r["catalog_version"] for r in rows}


async def test_catalog_version_per_process(page, web_settings):
    async with running_console(web_settings, services=("returns",)) as site:
        await site.apply_catalog(portal_catalog())
        await wait_for(lambda: _all_at(site, 1), timeout=20)
        doc = portal_catalog().replace("Bolt Energy", "Bolt Energy Inc")
        await site.apply_catalog(doc)
        await wait_for(lambda: _all_at(site, 2), timeout=20)
        async with site.db() as conn:
            await conn.execute(
                "INSERT INTO process_heartbeats (process_id, service, catalog_version, started_at, seen_at)"
                " VALUES ('router@gone:42', 'router', 1, now() - '1 hour'::interval, now() - '5 minutes'::interval)"
            )
        await site.staff("vic@staff.test", "viewer")
        await site.login(page, "vic@staff.test")
        await page.click("nav >> text=Processes")
        assert await page.inner_text("#current-version") == "2"
        first = page.locator("#processes tbody tr").first
        assert await first.get_attribute("data-process") == "router@gone:42"
        assert await first.locator(".state").inner_text() == "stale"
        for service in ("admin", "returns"):
            row = page.locator(f"#processes tr:has(td:text-is('{service}'))")
            assert await row.locator(".version").inner_text() == "2"
            assert await row.locator(".state").inner_text() == "current"

        key = await site.key("vic@staff.test")
        async with site.client(key) as api:
            body = (await api.get("/admin/api/v1/processes")).json()
        assert body["current_version"] == 2
        states = {p["process_id"]: p["state"] for p in body["processes"]}
        assert states["router@gone:42"] == "stale"
        assert sorted(p["service"] for p in body["processes"] if p["state"] == "current") == ["admin", "returns"]


async def _all_at(site, version: int) -> bool:
    found = await reported(site)
    return found.get("admin") == version and found.get("returns") == version
