"""Client Portal, returns (D5, F1–F6) in a real browser, with the real returns service behind the
page: the Return form (the lead type's reasons, "returnable until", this month's allowance), the
answer shown on the page (accepted; refused for the window, the cap, an earlier return), one
return for a form sent twice, no Return button where the contract allows none, and the Returns
screen with its status and date filters. Another client's lead or return is a 404."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml

from tests.portal_support import assign, person, portal_catalog, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

SERVICES = ("portal_auth", "returns")


def catalog(acme: dict[str, Any] | None = None) -> str:
    doc = yaml.safe_load(portal_catalog())
    doc["clients"][0].update(acme or {})
    return yaml.safe_dump(doc)


async def sell_many(conn, count: int, *, client: str = "acme", at: datetime | None = None) -> list[uuid.UUID]:
    return [await sell(conn, client, person(n), completed_at=at) for n in range(count)]


async def add_return(conn, client_id: str, lead_id: uuid.UUID, **values: Any) -> uuid.UUID:
    """A return as the returns service records it."""
    return_id = uuid.uuid4()
    row = {
        "reason": "wrong_number",
        "status": "pending",
        "decision_reason": None,
        "note": None,
        "credit": Decimal("0"),
        "requested_at": datetime.now(UTC),
        "decided_at": None,
        "holds_lead": True,
        **values,
    }
    await conn.execute(
        "INSERT INTO returns (id, client_id, lead_id, reason, status, decision_reason, note, credit, holds_lead,"
        " requested_at, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        return_id,
        client_id,
        lead_id,
        row["reason"],
        row["status"],
        row["decision_reason"],
        row["note"],
        row["credit"],
        row["holds_lead"],
        row["requested_at"],
        row["decided_at"],
    )
    return return_id


async def test_d5_return_a_lead_with_a_reason_and_see_the_answer(page, web_settings, smtp):
    async with running_site(web_settings, smtp, services=SERVICES) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        delivered = datetime.now(UTC) - timedelta(minutes=30)
        async with site.db() as conn:
            leads = await sell_many(conn, 20, at=delivered)  # 10% of 20: 2 returns allowed
        lead = leads[0]
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        await page.click("#return-lead")
        await page.wait_for_url(f"{site.url}/leads/{lead}/return")
        options = await page.locator("#return-reason option").all_inner_texts()
        assert options == ["Choose a reason", "Wrong number", "Out of area"]
        until = (delivered + timedelta(days=30)).astimezone().strftime("%Y-%m-%d")
        assert "30 days after delivery" in await page.inner_text("#returnable-until")
        assert until[:7] in await page.inner_text("#returnable-until")
        assert (await page.inner_text(".allowance[data-scope=delivery_account] strong")) == "0 of 2 used"

        await page.click("#return-form button[type=submit]")  # no reason: the error beside the field
        assert await page.inner_text("#return-reason-error") == "Choose a reason."
        await page.select_option("#return-reason", "out_of_area")
        await page.fill("#return-comment", "Lives in Nevada")
        form = {
            "csrf": await page.get_attribute("#return-form input[name=csrf]", "value"),
            "return_id": await page.get_attribute("#return-form input[name=return_id]", "value"),
            "reason": "out_of_area",
            "comment": "Lives in Nevada",
        }
        await page.click("#return-form button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}/return?return_id={form['return_id']}")
        assert await page.get_attribute("#return-outcome", "data-kind") == "accepted"
        assert "pending review" in await page.inner_text("#return-outcome")
        assert (await page.inner_text(".allowance[data-scope=delivery_account] strong")) == "1 of 2 used"
        assert await page.locator("#return-form").count() == 0

        # The same form sent again (double click, browser retry) is the same return.
        again = await page.request.post(f"{site.url}/leads/{lead}/return", form=form, max_redirects=0)
        assert again.status == 303 and form["return_id"] in again.headers["location"]
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM returns") == 1
            row = await conn.fetchrow("SELECT reason, comment, requested_by, status FROM returns")
        assert dict(row) == {
            "reason": "out_of_area",
            "comment": "Lives in Nevada",
            "requested_by": "ann@acme.test",
            "status": "pending",
        }
        # The lead now shows its return and offers no second one.
        await page.goto(f"{site.url}/leads/{lead}")
        assert "Return pending" in await page.inner_text("#lead-facts")
        assert await page.locator("#return-lead").count() == 0
        await page.goto(f"{site.url}/leads/{lead}/return")
        assert "already returned" in await page.inner_text("#return-unavailable")


async def test_d5_refusals_show_their_reason_window_cap_and_already_returned(page, web_settings, smtp):
    async with running_site(web_settings, smtp, services=SERVICES) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        now = datetime.now(UTC)
        async with site.db() as conn:
            old = await sell(conn, "acme", person(90), completed_at=now - timedelta(days=31))
            few = await sell_many(conn, 9, at=now - timedelta(minutes=5))  # 10% of 9 allows none
        await site.login(page, "ann@acme.test")

        async def submit(lead: uuid.UUID) -> str:
            await page.goto(f"{site.url}/leads/{lead}/return")
            await page.select_option("#return-reason", "wrong_number")
            await page.click("#return-form button[type=submit]")
            await page.wait_for_url("**/return?return_id=*")
            assert await page.get_attribute("#return-outcome", "data-kind") == "refused"
            return await page.inner_text("#return-outcome strong")

        await page.goto(f"{site.url}/leads/{old}/return")
        assert "the window has closed" in await page.inner_text("#returnable-until")
        assert await submit(old) == "Return refused: the return window for this lead has closed."
        await page.goto(f"{site.url}/leads/{few[0]}/return")
        assert (await page.inner_text(".allowance[data-scope=delivery_account] strong")) == "0 of 0 used"
        assert await submit(few[0]) == "Return refused: this month's return allowance is used up."
        # A refusal by a rule does not hold the lead: the button is still offered.
        await page.goto(f"{site.url}/leads/{few[0]}")
        assert await page.locator("#return-lead").count() == 1

        # Returned before (pending): the page says so; a form sent anyway is refused with the reason.
        async with site.db() as conn:
            await add_return(conn, "acme", few[1])
        await page.goto(f"{site.url}/leads/{few[1]}/return")
        assert await page.locator("#return-form").count() == 0
        csrf = await page.get_attribute("form[action$='/logout'] input[name=csrf]", "value")
        response = await page.request.post(
            f"{site.url}/leads/{few[1]}/return",
            form={"csrf": csrf, "return_id": str(uuid.uuid4()), "reason": "wrong_number", "comment": ""},
        )
        assert response.status == 200
        assert "Return refused: this lead was already returned." in await response.text()


async def test_d5_auto_approved_return_shows_its_credit(page, web_settings, smtp):
    async with running_site(
        web_settings, smtp, services=SERVICES, catalog=catalog({"auto_approve_returns": True})
    ) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        async with site.db() as conn:
            leads = await sell_many(conn, 10)
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{leads[0]}/return")
        await page.select_option("#return-reason", "wrong_number")
        await page.click("#return-form button[type=submit]")
        await page.wait_for_url("**/return?return_id=*")
        assert await page.inner_text("#return-outcome strong") == "Return accepted and approved. $25.00 credited."
        await page.goto(f"{site.url}/returns")
        row = page.locator(f"#returns-table tr[data-lead='{leads[0]}']")
        assert await row.locator(".status").inner_text() == "Approved"
        assert await row.locator(".returned").inner_text() == "Yes"
        assert await row.locator(".credit").inner_text() == "$25.00"
        assert "Approved at once" in await row.locator(".decision").inner_text()


async def test_f1_no_return_button_where_the_contract_allows_no_returns(page, web_settings, smtp):
    no_returns = catalog({"options": {"return_pct_delivery_accounts": "0"}})
    async with running_site(web_settings, smtp, services=SERVICES, catalog=no_returns) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        async with site.db() as conn:
            leads = await sell_many(conn, 20)
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{leads[0]}")
        assert await page.locator("#lead-facts").count() == 1
        assert await page.locator("#return-lead").count() == 0
        await page.goto(f"{site.url}/leads/{leads[0]}/return")
        assert await page.inner_text("#return-unavailable") == "Your contract allows no returns of this lead."
        assert await page.locator("#return-form").count() == 0


async def test_f2_to_f6_the_returns_screen_lists_and_filters(page, web_settings, smtp):
    async with running_site(web_settings, smtp, services=SERVICES) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        day = timedelta(days=1)
        now = datetime.now(UTC)
        async with site.db() as conn:
            leads = await sell_many(conn, 4)
            bolts = await sell(conn, "bolt", person(77, first_name="BoltSecret"))
            pending = await add_return(conn, "acme", leads[0], requested_at=now - 2 * day, comment=None)
            approved = await add_return(
                conn,
                "acme",
                leads[1],
                reason="out_of_area",
                status="approved",
                decision_reason="admin",
                note="Verified: out of area",
                credit=Decimal("25.00"),
                requested_at=now - 5 * day,
                decided_at=now - 4 * day,
            )
            denied = await add_return(
                conn,
                "acme",
                leads[2],
                status="denied",
                decision_reason="window_expired",
                holds_lead=False,
                requested_at=now - 40 * day,
                decided_at=now - 40 * day,
            )
            bolts_return = await add_return(conn, "bolt", bolts)
        await site.login(page, "ann@acme.test")
        await page.click("nav >> text=Returns")
        await page.wait_for_url(f"{site.url}/returns")
        order = [await r.get_attribute("data-return") for r in await page.locator("#returns-table tbody tr").all()]
        assert order == [str(pending), str(approved), str(denied)]  # newest first; not bolt's
        row = page.locator(f"tr[data-return='{approved}']")
        assert await row.locator(".status").inner_text() == "Approved"
        assert await row.locator(".reason").inner_text() == "out of area"
        assert await row.locator(".note").inner_text() == "Verified: out of area"
        assert await row.locator(".credit").inner_text() == "$25.00"
        denied_row = page.locator(f"tr[data-return='{denied}']")
        assert await denied_row.locator(".returned").inner_text() == "No"
        assert "return window" in await denied_row.locator(".decision").inner_text()
        assert await page.locator(f"tr[data-return='{pending}'] .returned").inner_text() == "Not yet"

        await page.select_option("#status", "approved")
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url("**/returns?status=approved*")
        shown = [await r.get_attribute("data-return") for r in await page.locator("#returns-table tbody tr").all()]
        assert shown == [str(approved)]

        start = (now - 10 * day).astimezone().date().isoformat()
        await page.goto(f"{site.url}/returns?from={start}")
        shown = [await r.get_attribute("data-return") for r in await page.locator("#returns-table tbody tr").all()]
        assert shown == [str(pending), str(approved)]
        response = await page.request.get(f"{site.url}/returns?from=yesterday&status=lost")
        assert response.status == 400
        body = await response.text()
        assert "Enter a date like" in body and "Choose Pending" in body
        assert str(bolts_return) not in body

        # Another client's lead, or return, is a 404 — never a 403.
        for path in (f"/leads/{bolts}/return", f"/leads/{leads[0]}/return?return_id={bolts_return}"):
            response = await page.request.get(site.url + path)
            assert response.status == 404, path
            assert "BoltSecret" not in await response.text()


async def test_a_user_sees_only_the_returns_of_leads_they_see(page, web_settings, smtp):
    async with running_site(web_settings, smtp, services=SERVICES) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        eve = await site.user("acme", "eve@acme.test")
        async with site.db() as conn:
            mine, other = await sell_many(conn, 2)
            await assign(conn, "acme", mine, eve)
            my_return = await add_return(conn, "acme", mine)
            other_return = await add_return(conn, "acme", other)
        await site.login(page, "eve@acme.test")
        await page.goto(f"{site.url}/returns")
        shown = [await r.get_attribute("data-return") for r in await page.locator("#returns-table tbody tr").all()]
        assert shown == [str(my_return)]
        for path in (f"/leads/{other}/return", f"/leads/{other}/return?return_id={other_return}"):
            assert (await page.request.get(site.url + path)).status == 404
