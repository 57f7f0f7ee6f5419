"""The Client Options screen in a real browser: every option of the seed, effective values with
their source, saving as a new catalog version, bad input beside the field with nothing saved, two
admins saving at once (the second is told, nothing lost), version history with diff and YAML
download, `leadwire catalog export` round-trips, the whole-catalog YAML editor. And the same
through the API, with If-Match."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from shared import db
from shared.catalog.loader import dump_catalog, parse_catalog
from shared.catalog.store import apply_catalog, export_catalog
from tests.admin_support import running_console

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

CATALOG = yaml.safe_dump(
    {
        "options": {"expire_portal_email_link_days": 7},
        "lead_types": [{"id": "solar", "name": "Solar", "fields": [{"name": "phone", "type": "phone"}]}],
        "clients": [
            {"id": "acme", "name": "Acme Solar", "external_ref": "X1"},
            {"id": "bolt", "name": "Bolt Energy", "external_ref": "X1", "options": {"route_duplicate_leads": True}},
        ],
        "groups": [{"id": "east", "name": "East", "clients": ["acme", "bolt"]}],
        "delivery_accounts": [
            {
                "id": "acme-solar",
                "client": "acme",
                "lead_type": "solar",
                "price": "10",
                "max_return_pct": "25",
                "delivery": {"method": "http", "url": "http://127.0.0.1:9/x"},
            }
        ],
    }
)
SEED_LABELS = [
    "Apply Groups as Criteria",
    "Allow Confirm Price",
    "Disable Access to Portal for Inactive Users",
    "Expire Portal Email Link",
    "Delivery Force ID Mapping",
    "Route Duplicate Leads",
    "Default Return Percentage on Delivery Accounts",
    "Default Return Percentage on Orders",
]


async def version_of(site) -> int:
    async with site.db() as conn:
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM catalog_versions"))


async def test_options_screen_saves_a_new_version_and_shows_where_values_come_from(page, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(CATALOG)
        await site.staff("ada@staff.test", "admin")
        await site.login(page, "ada@staff.test")
        await page.goto(f"{site.url}/options")
        text = await page.inner_text("#global-options")
        for label in SEED_LABELS:
            assert label in text
        row = page.locator("#effective-bolt tr[data-option=route_duplicate_leads]")
        assert await row.get_attribute("data-source") == "client"
        account = page.locator("#effective-acme tr[data-source=account]")
        assert "acme-solar" in await account.inner_text() and "25" in await account.inner_text()

        # Bad input: each error beside its field, the typed values kept, nothing saved.
        await page.fill("#global-expire_portal_email_link_days", "soon")
        await page.fill("#client-acme-return_pct_orders", "150")
        await page.click("#options-form button[type=submit]")
        assert "valid integer" in await page.inner_text("#global-expire_portal_email_link_days-error")
        assert "less than or equal to 100" in await page.inner_text("#client-acme-return_pct_orders-error")
        assert await page.input_value("#client-acme-return_pct_orders") == "150"
        # A rule across entities (as `catalog apply` checks it): both clients have external_ref X1.
        await page.fill("#global-expire_portal_email_link_days", "7")
        await page.fill("#client-acme-return_pct_orders", "")
        await page.select_option("#global-delivery_force_id_mapping", "external_ref")
        await page.click("#options-form button[type=submit]")
        assert "X1" in await page.inner_text("#global-delivery_force_id_mapping-error")
        assert await version_of(site) == 1

        # A good save: a new version, applied by this staff user, effective values follow.
        await page.fill("#global-expire_portal_email_link_days", "0")
        await page.fill("#client-acme-return_pct_orders", "4")
        await page.select_option("#global-delivery_force_id_mapping", "client_id")
        await page.select_option("#client-acme-allow_confirm_price", "true")
        await page.select_option("#group-east-apply_groups_as_criteria", "false")
        await page.click("#options-form button[type=submit]")
        assert "Saved as catalog version 2" in await page.inner_text("#saved")
        row = page.locator("#effective-acme tr[data-option=allow_confirm_price]")
        assert await row.get_attribute("data-source") == "client"
        assert await row.locator(".value").inner_text() == "yes"
        group_row = page.locator("#effective-acme tr[data-option=apply_groups_as_criteria]")
        assert await group_row.get_attribute("data-source") == "group"
        async with site.db() as conn:
            assert await conn.fetchval("SELECT applied_by FROM catalog_versions WHERE version = 2") == "ada@staff.test"
            audit = await conn.fetchrow("SELECT actor, action, detail FROM admin_audit WHERE action = 'options.save'")
            assert audit["actor"] == "ada@staff.test"
            assert audit["detail"]["changes"]["options.expire_portal_email_link_days"] == [7, 0]
            catalog = await export_catalog(conn)
        assert catalog.options.expire_portal_email_link_days == 0
        assert str(catalog.clients_by_id["acme"].options.return_pct_orders) == "4"
        # The console's catalog reloaded too.
        assert site.app.state.runtime.catalog.options.expire_portal_email_link_days in (0, 7)

        # History: the diff of version 2 and its YAML, which `catalog export` matches and which
        # applies as "unchanged" (round trip).
        await page.goto(f"{site.url}/catalog/versions")
        assert await page.inner_text("tr[data-version='2'] .by") == "ada@staff.test"
        await page.click("tr[data-version='2'] a >> nth=0")
        diff = await page.inner_text("#diff")
        assert "-  expire_portal_email_link_days: 7" in diff and "+  expire_portal_email_link_days: 0" in diff
        async with page.expect_download() as download_info:
            await page.click("#download")
        download = await download_info.value
        downloaded = (await download.path()).read_text()
        assert downloaded == dump_catalog(catalog)
        async with db.connection(site.settings.database_url) as conn:
            assert await apply_catalog(conn, parse_catalog(downloaded)) is None


async def test_two_admins_saving_at_once_the_second_is_told_and_nothing_is_lost(browser, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(CATALOG)
        await site.staff("ada@staff.test", "admin")
        await site.staff("bob@staff.test", "admin")
        contexts = [await browser.new_context(), await browser.new_context()]
        try:
            ada, bob = [await c.new_page() for c in contexts]
            await site.login(ada, "ada@staff.test")
            await site.login(bob, "bob@staff.test")
            await ada.goto(f"{site.url}/options")
            await bob.goto(f"{site.url}/options")
            await ada.fill("#global-default_return_pct_orders", "15")
            await bob.fill("#global-default_return_pct_delivery_accounts", "30")
            await ada.click("#options-form button[type=submit]")
            assert "Saved as catalog version 2" in await ada.inner_text("#saved")
            await bob.click("#options-form button[type=submit]")
            assert "Someone else saved catalog version 2" in await bob.inner_text(".form-error")
            # Bob's typing is still there, and he sees what Ada changed.
            assert await bob.input_value("#global-default_return_pct_delivery_accounts") == "30"
            assert "default_return_pct_orders: '15'" in await bob.inner_text("#conflict-diff")
            async with site.db() as conn:
                assert await conn.fetchval("SELECT max(version) FROM catalog_versions") == 2
            # Saving again (he has seen the change) keeps Ada's value: the form now carries it.
            await bob.fill("#global-default_return_pct_orders", "15")
            await bob.click("#options-form button[type=submit]")
            assert "Saved as catalog version 3" in await bob.inner_text("#saved")
            async with site.db() as conn:
                catalog = await export_catalog(conn)
            assert str(catalog.options.default_return_pct_orders) == "15"
            assert str(catalog.options.default_return_pct_delivery_accounts) == "30"
        finally:
            for context in contexts:
                await context.close()


async def test_the_yaml_editor_refuses_a_bad_catalog_beside_the_text(page, web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(CATALOG)
        await site.staff("ada@staff.test", "admin")
        await site.login(page, "ada@staff.test")
        await page.goto(f"{site.url}/catalog/edit")
        text = await page.input_value("#yaml")
        await page.fill(
            "#yaml", text.replace("price: '10'", "price: -3").replace("time_zone: UTC", "time_zone: Mars/Base")
        )
        await page.click("#catalog-form button[type=submit]")
        errors = await page.inner_text("#yaml-error")
        assert "(acme-solar).price" in errors and "unknown time zone 'Mars/Base'" in errors and "line " in errors
        assert "price: -3" in await page.input_value("#yaml")
        assert await version_of(site) == 1
        await page.fill("#yaml", text.replace("name: Acme Solar", "name: Acme Solar Inc"))
        await page.click("#catalog-form button[type=submit]")
        await page.wait_for_url(f"{site.url}/catalog/versions/2")
        assert "+  name: Acme Solar Inc" in await page.inner_text("#diff")


async def test_options_through_the_api_with_if_match(web_settings):
    async with running_console(web_settings) as site:
        await site.apply_catalog(CATALOG)
        await site.staff("ada@staff.test", "admin")
        key = await site.key("ada@staff.test")
        async with site.client(key) as api:
            view = (await api.get(f"{site.api}/options")).json()
            assert view["version"] == 1
            bolt = next(c for c in view["clients"] if c["id"] == "bolt")
            assert bolt["overrides"] == {"route_duplicate_leads": True}
            edit = {"options": {"allow_confirm_price": True}, "clients": {"acme": {"return_pct_orders": "5"}}}
            assert (await api.put(f"{site.api}/options", json=edit)).status_code == 428
            bad = await api.put(
                f"{site.api}/options",
                json={"options": {"expire_portal_email_link_days": -1, "nope": 1}},
                headers={"If-Match": '"1"'},
            )
            assert bad.status_code == 400 and set(bad.json()["errors"]) == {"global.nope"}
            bad = await api.put(
                f"{site.api}/options",
                json={"options": {"expire_portal_email_link_days": -1}},
                headers={"If-Match": '"1"'},
            )
            assert bad.status_code == 400
            assert "greater than or equal to 0" in bad.json()["errors"]["global.expire_portal_email_link_days"]
            # Two saves from version 1 at once: one wins, the other gets 409; nothing is mixed.
            answers = await asyncio.gather(
                api.put(f"{site.api}/options", json=edit, headers={"If-Match": '"1"'}),
                api.put(
                    f"{site.api}/options",
                    json={"options": {"route_duplicate_leads": True}},
                    headers={"If-Match": '"1"'},
                ),
            )
            assert sorted(a.status_code for a in answers) == [200, 409]
            assert (await api.get(f"{site.api}/catalog")).headers["etag"] == '"2"'
            history = (await api.get(f"{site.api}/catalog/versions")).json()
            assert [v["version"] for v in history] == [2, 1] and history[0]["applied_by"] == "ada@staff.test"
            version = (await api.get(f"{site.api}/catalog/versions/2")).json()
            assert any(line.startswith("+") for line in version["diff"])
            # The whole catalog as YAML, validated as `catalog apply` does.
            wrong = await api.put(
                f"{site.api}/catalog", json={"yaml": "clients: [{id: '!'}]"}, headers={"If-Match": "2"}
            )
            assert wrong.status_code == 400 and "line 1" in wrong.json()["errors"]["yaml"]
            same = await api.put(f"{site.api}/catalog", json={"yaml": CATALOG}, headers={"If-Match": "2"})
            assert same.status_code == 200 and same.json() == {"version": 3, "changed": True}
