"""Delivery accounts, groups and orders edited on their own forms in a real browser: each save
is a new catalog version through the catalog's validation (errors beside their fields, nothing
saved on any), audited, refused when someone else saved since the form was opened, and
read-only for a viewer."""

from __future__ import annotations

import uuid

import pytest
import yaml

from tests.admin_support import running_console
from tests.portal_support import portal_catalog

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def version_of(site) -> int:
    async with site.db() as conn:
        return int(await conn.fetchval("SELECT max(version) FROM catalog_versions"))


async def test_add_and_edit_a_delivery_account(page, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("ada@staff.test", "admin")
        await site.login(page, "ada@staff.test")
        await page.goto(f"{site.url}/accounts")
        await page.click("#new-account")
        await page.fill("#id", "bolt-auto")
        await page.select_option("#client", "bolt")
        await page.select_option("#lead_type", "auto")
        await page.fill("#price", "lots")
        await page.fill("#caps-daily", "-3")
        await page.uncheck("#schedule-days-sun")
        await page.uncheck("#schedule-days-sat")
        await page.fill("#schedule-start", "09:00")
        await page.fill("#criteria-0-field", "colour")
        await page.select_option("#criteria-0-op", "equals")
        await page.fill("#criteria-0-value", "red")
        await page.fill("#delivery-url", "ftp://buyer.example")
        await page.click("#entry-form button[type=submit]")
        # Every error beside its field; what was typed kept; nothing saved.
        assert "decimal" in (await page.inner_text("#price-error")).lower()
        assert "greater than or equal to 0" in await page.inner_text("#caps-daily-error")
        assert "https?://" in await page.inner_text("#delivery-url-error")
        assert await page.input_value("#criteria-0-field") == "colour"
        assert not await page.is_checked("#schedule-days-sun")
        assert await version_of(site) == 1

        # As with `catalog apply`, references are checked once the entry is valid on its own.
        await page.fill("#price", "14.75")
        await page.fill("#caps-daily", "30")
        await page.fill("#delivery-url", "https://buyer.example/auto")
        await page.click("#entry-form button[type=submit]")
        assert "no field 'colour' in lead type 'auto'" in await page.inner_text("#criteria-0-field-error")
        assert await version_of(site) == 1

        await page.fill("#criteria-0-field", "state")
        await page.select_option("#criteria-0-op", "in")
        await page.fill("#criteria-0-value", "CA, NV")
        await page.select_option("#delivery-format", "form")
        await page.select_option("#delivery-auth-type", "bearer")
        await page.fill("#delivery-auth-token", "top-secret-token")
        await page.click("#entry-form button[type=submit]")
        assert "Saved as catalog version 2" in await page.inner_text("#saved")
        assert "top-secret-token" not in await page.content()
        async with site.db() as conn:
            row = await conn.fetchrow("SELECT client_id, price, spec FROM delivery_accounts WHERE id = 'bolt-auto'")
            assert (row["client_id"], str(row["price"])) == ("bolt", "14.75")
            audit = await conn.fetchrow("SELECT actor, detail FROM admin_audit WHERE action = 'account.create'")
        assert audit["actor"] == "ada@staff.test"
        assert audit["detail"]["account"] == "bolt-auto"
        assert audit["detail"]["changes"]["caps.daily"] == [None, 30]
        assert "top-secret-token" not in str(audit["detail"])
        spec = row["spec"]
        assert spec["criteria"] == [{"field": "state", "op": "in", "value": ["CA", "NV"], "min": None, "max": None}]
        assert spec["schedule"]["days"] == ["mon", "tue", "wed", "thu", "fri"]
        assert spec["delivery"]["auth"] == {
            "type": "bearer",
            "token": "top-secret-token",
            "username": None,
            "password": None,
        }

        # Editing: the token box stays blank and blank keeps the token; a criterion row blanked
        # is removed.
        await page.fill("#price", "15.00")
        await page.fill("#criteria-0-field", "")
        await page.select_option("#criteria-0-op", "")
        await page.fill("#criteria-0-value", "")
        await page.click("#entry-form button[type=submit]")
        assert "Saved as catalog version 3" in await page.inner_text("#saved")
        async with site.db() as conn:
            spec = await conn.fetchval("SELECT spec FROM delivery_accounts WHERE id = 'bolt-auto'")
        assert spec["criteria"] == [] and spec["delivery"]["auth"]["token"] == "top-secret-token"
        # Saving again unchanged makes no version.
        await page.click("#entry-form button[type=submit]")
        assert "Nothing changed" in await page.inner_text("#saved")


async def test_groups_and_orders_and_a_conflict(page, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("ada@staff.test", "admin")
        await site.login(page, "ada@staff.test")

        await page.goto(f"{site.url}/groups")
        await page.click("#new-group")
        await page.fill("#id", "east")
        await page.fill("#name", "East")
        await page.fill("#clients", "bolt, nobody")
        await page.click("#entry-form button[type=submit]")
        assert "unknown client 'nobody'" in await page.inner_text("#clients-error")
        await page.fill("#clients", "bolt, acme")
        await page.select_option("#apply_groups_as_criteria", "false")
        await page.select_option("#distribution", "round_robin")
        await page.click("#entry-form button[type=submit]")
        assert "Saved as catalog version 2" in await page.inner_text("#saved")
        async with site.db() as conn:
            spec = await conn.fetchval("SELECT spec FROM client_groups WHERE id = 'east'")
        assert spec["clients"] == ["bolt", "acme"] and spec["apply_groups_as_criteria"] is False

        await page.goto(f"{site.url}/orders")
        await page.click("#new-order")
        await page.fill("#id", "acme-o1")
        await page.select_option("#client", "acme")
        await page.fill("#total", "100")
        await page.fill("#start_date", "2026-12-01")
        await page.fill("#end_date", "2026-11-01")
        await page.fill("#accounts", "bolt-solar")
        await page.click("#entry-form button[type=submit]")
        assert "end_date is before start_date" in await page.inner_text(".form-error")
        await page.fill("#end_date", "")
        await page.click("#entry-form button[type=submit]")
        assert "belongs to client 'bolt'" in await page.inner_text("#accounts-error")
        await page.fill("#accounts", "acme-solar")
        await page.click("#entry-form button[type=submit]")
        assert "Saved as catalog version 3" in await page.inner_text("#saved")
        async with site.db() as conn:
            row = await conn.fetchrow("SELECT client_id, total, status FROM orders WHERE id = 'acme-o1'")
        assert (row["client_id"], str(row["total"]), row["status"]) == ("acme", "100.00", "open")
        await page.goto(f"{site.url}/orders")
        assert await page.locator("tr[data-order='acme-o1']").count() == 1

        # Someone else saves while this form is open: refused, the form kept, nothing mixed.
        await page.goto(f"{site.url}/orders/acme-o1")
        doc = yaml.safe_load(portal_catalog())
        async with site.db() as conn:
            doc["groups"] = (await conn.fetchval("SELECT document FROM catalog_versions WHERE version = 3"))["groups"]
            doc["orders"] = (await conn.fetchval("SELECT document FROM catalog_versions WHERE version = 3"))["orders"]
        doc["clients"][1]["name"] = "Bolt Renamed"
        await site.apply_catalog(yaml.safe_dump(doc))
        await page.fill("#total", "250")
        await page.click("#entry-form button[type=submit]")
        assert "Someone else saved catalog version 4" in await page.inner_text(".form-error")
        assert await page.input_value("#total") == "250"
        async with site.db() as conn:
            assert str(await conn.fetchval("SELECT total FROM orders WHERE id = 'acme-o1'")) == "100.00"
        # The refused page carries the new version: saving again applies on top of it.
        await page.click("#entry-form button[type=submit]")
        assert "Saved as catalog version 5" in await page.inner_text("#saved")
        async with site.db() as conn:
            assert str(await conn.fetchval("SELECT total FROM orders WHERE id = 'acme-o1'")) == "250.00"
            assert await conn.fetchval("SELECT name FROM clients WHERE id = 'bolt'") == "Bolt Renamed"


async def test_a_viewer_reads_the_forms_and_changes_nothing(page, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("vic@staff.test", "viewer")
        await site.login(page, "vic@staff.test")
        await page.goto(f"{site.url}/accounts/acme-solar")
        assert await page.input_value("#price") == "25.00"
        assert await page.locator("#entry-form button[type=submit]").count() == 0
        assert await page.get_attribute("#price", "readonly") is not None
        await page.goto(f"{site.url}/accounts")
        assert await page.locator("#new-account").count() == 0
        await page.goto(f"{site.url}/groups")
        assert await page.locator("#new-group").count() == 0


async def test_reroute_button_on_an_unsold_lead(page, web_settings):
    """The button sends router.reroute through the outbox with its audit row (the router's side
    runs over the real broker in tests/integration/test_admin_reroute.py); a viewer has no button."""
    async with running_console(web_settings) as site:
        await site.apply_catalog(portal_catalog())
        await site.staff("otto@staff.test", "operator")
        await site.staff("vic@staff.test", "viewer")
        lead_id = uuid.uuid4()
        async with site.db() as conn:
            await conn.execute(
                "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status, reason, decided_at)"
                " VALUES ($1, 'web', 'k1', 'solar', '{}', 'unsold', 'no eligible delivery account', now())",
                lead_id,
            )
        await site.login(page, "vic@staff.test")
        await page.goto(f"{site.url}/leads/{lead_id}")
        assert await page.locator("#reroute-form").count() == 0
        await page.context.clear_cookies()

        await site.login(page, "otto@staff.test")
        await page.goto(f"{site.url}/leads/{lead_id}")
        await page.click("#reroute-form button[type=submit]")
        assert "Re-route sent" in await page.inner_text("#done")
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM admin_audit WHERE action = 'lead.reroute'") == 1
            await conn.execute("UPDATE leads SET status = 'sold' WHERE id = $1", lead_id)
        await page.goto(f"{site.url}/leads/{lead_id}")
        assert await page.locator("#reroute-form").count() == 0
