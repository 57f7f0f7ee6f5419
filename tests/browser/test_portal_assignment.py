"""Lead assignment (H5) and the scopes it gives meaning to, in a real browser with the real
notifier and SMTP: admins assign any lead, View Downline users within their downline, others not
at all; the assignee (and the View Downline users above them) see the lead and get its new-lead
email, nobody else does; an emailed link does not widen a signed-in user's scope."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from shared.contracts import LeadOutcome, SoldDelivery
from tests.portal_support import person, running_site, sell
from tests.support import publish_event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def _assignee(site, lead_id):
    async with site.db() as conn:
        return await conn.fetchrow(
            "SELECT user_id, assigned_by FROM lead_assignments WHERE client_id = 'acme' AND lead_id = $1", lead_id
        )


async def _subscribe(site, *emails):
    async with site.db() as conn:
        await conn.execute(
            "UPDATE portal_users SET notify_new_leads = true WHERE email = ANY($1::text[])", list(emails)
        )


def _new_lead_recipients(smtp) -> list[str]:
    return sorted(address for mail in smtp.of_kind("new_lead") for address in mail.rcpt_tos)


async def test_h5_admins_assign_downline_users_within_their_downline_others_not(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        admin = await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        eve = await site.user("acme", "eve@acme.test")
        gone = await site.user("acme", "gone@acme.test", enabled=False)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1, first_name="Assignable"))

        # Admin: any enabled user (the disabled one is not offered, and refused when forged).
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        assert await page.inner_text("#assigned-to") == "Nobody (only admins see this lead)"
        offered = await page.eval_on_selector_all("#assignee option", "os => os.map(o => o.value)")
        assert set(offered) == {"nobody", str(admin), str(dana), str(carl), str(eve)}
        csrf = await page.get_attribute("#assignment input[name=csrf]", "value")
        forged = await page.request.post(
            f"{site.url}/leads/{lead}/assign", form={"csrf": csrf or "", "assignee": str(gone)}
        )
        assert forged.status == 400 and "Choose an enabled user from the list." in await forged.text()
        assert await _assignee(site, lead) is None

        await page.select_option("#assignee", str(carl))
        await page.click("#assignment button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=assigned")
        assert await page.inner_text(".notice") == "The lead is assigned."
        assert await page.inner_text("#assigned-to") == "carl"
        row = await _assignee(site, lead)
        assert (row["user_id"], row["assigned_by"]) == (carl, admin)

        # Dana (View Downline, above Carl) sees it and may give it to herself or Carl, not to Eve.
        await page.context.clear_cookies()
        await site.login(page, "dana@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        offered = await page.eval_on_selector_all("#assignee option", "os => os.map(o => o.value)")
        assert set(offered) == {str(dana), str(carl)}
        csrf = await page.get_attribute("#assignment input[name=csrf]", "value")
        for outside in (str(eve), "nobody", "not-a-user"):
            forged = await page.request.post(
                f"{site.url}/leads/{lead}/assign", form={"csrf": csrf or "", "assignee": outside}
            )
            assert forged.status == 400, outside
        assert (await _assignee(site, lead))["user_id"] == carl
        await page.select_option("#assignee", str(dana))
        await page.click("#assignment button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=assigned")
        assert (await _assignee(site, lead))["user_id"] == dana

        # Carl (scope own) no longer sees it; once it is his again, he has no assignment form.
        await page.context.clear_cookies()
        await site.login(page, "carl@acme.test")
        assert (await page.request.get(f"{site.url}/leads/{lead}", max_redirects=0)).status == 404
        async with site.db() as conn:
            await conn.execute("UPDATE lead_assignments SET user_id = $1 WHERE lead_id = $2", carl, lead)
        await page.goto(f"{site.url}/leads/{lead}")
        assert await page.inner_text("#assigned-to") == "carl"
        assert await page.locator("#assignee").count() == 0
        csrf = await page.get_attribute("#forward input[name=csrf]", "value")
        forged = await page.request.post(
            f"{site.url}/leads/{lead}/assign", form={"csrf": csrf or "", "assignee": str(eve)}
        )
        assert forged.status == 400 and "Only admins and users with View Downline assign leads." in await forged.text()
        assert (await _assignee(site, lead))["user_id"] == carl
        # Without the CSRF token: refused, nothing changed.
        forged = await page.request.post(f"{site.url}/leads/{lead}/assign", form={"assignee": str(carl)})
        assert forged.status == 403

        # Admin takes it away from everyone: only admins see it again.
        await page.context.clear_cookies()
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        await page.select_option("#assignee", "nobody")
        await page.click("#assignment button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=unassigned")
        assert await _assignee(site, lead) is None


async def test_new_lead_emails_and_links_follow_assignment(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        eve = await site.user("acme", "eve@acme.test")
        await _subscribe(site, "admin@acme.test", "dana@acme.test", "carl@acme.test", "eve@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(7, first_name="Notifiable"))
            delivery = await conn.fetchval("SELECT id FROM deliveries WHERE lead_id = $1", lead)
        sold = LeadOutcome(
            lead_id=lead,
            status="sold",
            source="web",
            idempotency_key=str(lead),
            lead_type="solar",
            deliveries=[
                SoldDelivery(delivery_id=delivery, client_id="acme", delivery_account_id="acme-solar", price="25")
            ],
            decided_at=datetime.now(UTC),
        )
        await publish_event(site.settings, "lead.sold", sold.model_dump(mode="json"))

        # Sold: only the admin hears of it — nobody else can see a lead nobody was assigned.
        await site.emails(1)
        async with site.db() as conn:
            await wait_for(
                lambda: conn.fetchval("SELECT count(*) = 1 FROM inbox WHERE consumer = 'notifier.lead-sold'")
            )
        assert _new_lead_recipients(smtp) == ["admin@acme.test"]

        # Assigned to Carl: Carl and Dana (View Downline, above him) are told; Eve is not.
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        await page.select_option("#assignee", str(carl))
        await page.click("#assignment button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=assigned")
        await site.emails(3)
        assert _new_lead_recipients(smtp) == ["admin@acme.test", "carl@acme.test", "dana@acme.test"]
        [carls] = smtp.to("carl@acme.test")
        assert "It was assigned to you." in carls.text()
        [danas] = smtp.to("dana@acme.test")
        assert "It was assigned to carl." in danas.text()

        # Carl's emailed link: Carl signed in goes to the lead; Eve signed in is refused (her scope
        # does not cover it); signed out, it shows the lead read-only (it was emailed to Carl).
        found = re.search(r"https?://\S+/link/(\S+)", carls.text())
        assert found is not None
        link_url = f"{site.url}/link/{found.group(1)}"
        context = await browser.new_context()
        try:
            other = await context.new_page()
            await site.login(other, "eve@acme.test")
            response = await other.goto(link_url)
            assert response is not None and response.status == 404
            assert "This lead is not yours to see" in await other.inner_text("body")
            assert "Notifiable" not in await other.content()
            await context.clear_cookies()
            await site.login(other, "carl@acme.test")
            await other.goto(link_url)
            assert other.url == f"{site.url}/leads/{lead}"
        finally:
            await context.close()

        # Reassigned to Eve: Eve is told. Back to Carl: nobody is told twice.
        for user, expected in ((eve, 4), (carl, 4)):
            await page.goto(f"{site.url}/leads/{lead}")
            await page.select_option("#assignee", str(user))
            await page.click("#assignment button[type=submit]")
            await page.wait_for_url(f"{site.url}/leads/{lead}?done=assigned")
            await site.emails(expected)
        async with site.db() as conn:
            await wait_for(
                lambda: conn.fetchval("SELECT count(*) = 3 FROM inbox WHERE consumer = 'notifier.lead-assigned'")
            )
            await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        assert _new_lead_recipients(smtp) == ["admin@acme.test", "carl@acme.test", "dana@acme.test", "eve@acme.test"]


async def test_the_lead_list_shows_and_filters_by_assignee(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        async with site.db() as conn:
            carls = await sell(conn, "acme", person(1, first_name="Carlslead"))
            danas = await sell(conn, "acme", person(2, first_name="Danaslead"))
            nobodys = await sell(conn, "acme", person(3, first_name="Nobodyslead"))
            await conn.execute(
                "INSERT INTO lead_assignments (client_id, lead_id, user_id) VALUES ('acme', $1, $2), ('acme', $3, $4)",
                carls,
                carl,
                danas,
                dana,
            )

        async def listed() -> dict[str, str]:
            rows = await page.locator("#lead-table tr[data-lead]").all()
            return {await r.get_attribute("data-lead"): await r.locator("td.assigned").inner_text() for r in rows}

        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads")
        assert await listed() == {str(carls): "carl", str(danas): "dana", str(nobodys): ""}
        await page.select_option("#assigned", "nobody")
        await page.click(".filters button[type=submit]")
        await page.wait_for_url(re.compile(r".*assigned=nobody.*"))
        assert await listed() == {str(nobodys): ""}
        await page.select_option("#assigned", str(carl))
        await page.click(".filters button[type=submit]")
        await page.wait_for_url(re.compile(rf".*assigned={carl}.*"))
        assert await listed() == {str(carls): "carl"}
        export = await (await page.request.get(f"{site.url}/leads/export.csv?assigned={carl}")).text()
        assert str(carls) in export and str(danas) not in export
        assert (await page.request.get(f"{site.url}/leads?assigned=someone")).status == 400

        # Dana (View Downline) filters within her downline; "nobody" is not offered.
        await page.context.clear_cookies()
        await site.login(page, "dana@acme.test")
        await page.goto(f"{site.url}/leads")
        offered = await page.eval_on_selector_all("#assigned option", "os => os.map(o => o.value)")
        assert set(offered) == {"", str(dana), str(carl)}
        assert await listed() == {str(carls): "carl", str(danas): "dana"}
        # Carl (own) gets no filter; another user's id finds nothing of theirs.
        await page.context.clear_cookies()
        await site.login(page, "carl@acme.test")
        await page.goto(f"{site.url}/leads")
        assert await page.locator("#assigned").count() == 0
        await page.goto(f"{site.url}/leads?assigned={dana}")
        assert await listed() == {}


async def test_assign_selected_from_the_lead_list(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        carl = await site.user("acme", "carl@acme.test")
        async with site.db() as conn:
            leads = [await sell(conn, "acme", person(n, first_name=f"Bulk{n}")) for n in range(1, 4)]
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads?q=Bulk")
        # Nothing ticked, or nobody chosen: said, nothing written.
        await page.select_option("#bulk-assignee", str(carl))
        await page.click("#bulk-assign button[type=submit]")
        assert await page.inner_text("#bulk-error") == "Tick the leads to assign first."
        assert "q=Bulk" in page.url  # back on the same list
        for lead in leads[:2]:
            await page.check(f"tr[data-lead='{lead}'] input[name=lead]")
        await page.select_option("#bulk-assignee", str(carl))
        await page.click("#bulk-assign button[type=submit]")
        assert await page.inner_text("#bulk-notice") == "2 leads assigned."
        async with site.db() as conn:
            owners = dict(await conn.fetch("SELECT lead_id, user_id FROM lead_assignments"))
        assert owners == {leads[0]: carl, leads[1]: carl}
        rows = {
            await r.get_attribute("data-lead"): await r.locator("td.assigned").inner_text()
            for r in await page.locator("#lead-table tr[data-lead]").all()
        }
        assert rows == {str(leads[0]): "carl", str(leads[1]): "carl", str(leads[2]): ""}
        # Carl (own) has no such form; a forged post is a 404.
        await page.context.clear_cookies()
        await site.login(page, "carl@acme.test")
        await page.goto(f"{site.url}/leads")
        assert await page.locator("#bulk-assign").count() == 0
        csrf = await page.get_attribute("form[action$='/logout'] input[name=csrf]", "value")
        forged = await page.request.post(
            f"{site.url}/leads/assign", form={"csrf": csrf or "", "lead": str(leads[2]), "assignee": str(carl)}
        )
        assert forged.status == 404
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM lead_assignments") == 2
