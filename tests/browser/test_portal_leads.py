"""Client Portal, the lead list (C1–C6) in a real browser: every lead delivered to the client and
nothing else, the date range in the client's time zone, the lead type, free-text search (phone
numbers typed any way), sorting by any column (lead fields included, numbers as numbers), keyset
pages, opening a lead, and the CSV export of exactly the current filter."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from services.portal.rules import PAGE_SIZE
from tests.portal_support import LA, person, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def column(page, name: str) -> list[str]:
    return await page.locator(f"#lead-table tbody td[data-column={name}]").all_inner_texts()


async def htmx(page, action) -> None:
    """Do something that makes htmx swap the leads panel, and wait until the new one is settled."""
    await page.evaluate(
        "window.leadwireSettled = false;"
        " document.body.addEventListener('htmx:afterSettle', () => { window.leadwireSettled = true }, {once: true})"
    )
    await action()
    # Polled from here: wait_for_function would evaluate a string, which the portal's CSP forbids.
    for _ in range(200):
        if await page.evaluate("window.leadwireSettled"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("htmx did not swap the leads panel")


async def submit_filters(page) -> None:
    await htmx(page, lambda: page.click("#leads-panel button[type=submit]"))


async def shown_leads(page) -> list[str]:
    return [await row.get_attribute("data-lead") for row in await page.locator("#lead-table tbody tr[data-lead]").all()]


async def test_c1_the_list_shows_every_lead_delivered_to_the_client_and_nothing_else(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            mine = [await sell(conn, "acme", person(n)) for n in range(3)]
            mine.append(
                await sell(
                    conn,
                    "acme",
                    {"first_name": "Otto", "phone": "2125550100", "state": "NY", "vehicles": "2"},
                    lead_type="auto",
                    price="12.50",
                )
            )
            await sell(conn, "acme", person(10), status="failed")  # a post the buyer refused: not theirs
            await sell(conn, "bolt", person(11))  # another client's
        await site.login(page, "ann@acme.test")
        await page.click("nav.sidebar >> text=Leads")
        assert sorted(await shown_leads(page)) == sorted(str(i) for i in mine)
        assert await page.inner_text("#lead-count strong") == "4"
        # The list columns come from the catalog's display metadata (labels, list_column).
        headers = await page.locator("#lead-table thead th a").all_inner_texts()
        assert [h.strip(" ▲▼") for h in headers][:7] == [
            "Delivered",
            "First name",
            "Last name",
            "Phone",
            "State",
            "Monthly bill",
            "Lead type",
        ]
        row = page.locator(f"tr[data-lead='{mine[0]}']")
        assert await row.locator("td[data-column=phone]").inner_text() == "4155550000"
        assert "$25.00" in await row.inner_text() and "Residential solar" in await row.inner_text()
        assert "Auto insurance" in await page.locator(f"tr[data-lead='{mine[3]}']").inner_text()


async def test_c2_the_date_range_is_in_the_clients_time_zone(page, mail_settings, smtp):
    zone = ZoneInfo(LA)
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        today = datetime.now(zone).date()
        day = today - timedelta(days=45)
        # 23:30 in Los Angeles on `day` is already the next day in UTC.
        late = datetime(day.year, day.month, day.day, 23, 30, tzinfo=zone).astimezone(UTC)
        async with site.db() as conn:
            old = await sell(conn, "acme", person(1), completed_at=late)
            new = await sell(conn, "acme", person(2))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads")
        assert await shown_leads(page) == [str(new)]  # the last 30 days by default
        assert await page.input_value("#from") == (today - timedelta(days=29)).isoformat()

        await page.fill("#from", day.isoformat())
        await page.fill("#to", day.isoformat())
        await submit_filters(page)
        assert f"from={day.isoformat()}" in page.url
        assert await shown_leads(page) == [str(old)]
        assert day.isoformat() in await page.inner_text(f"tr[data-lead='{old}'] td.when")

        await page.fill("#from", (day + timedelta(days=1)).isoformat())
        await page.fill("#to", (day + timedelta(days=1)).isoformat())
        await submit_filters(page)
        assert await shown_leads(page) == []

        await page.fill("#from", today.isoformat())
        await page.fill("#to", (today - timedelta(days=3)).isoformat())
        await submit_filters(page)
        assert await page.inner_text("#to-error") == "The end date is before the start date."


async def test_c3_the_lead_type_filter(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            solar = await sell(conn, "acme", person(1))
            auto = await sell(
                conn,
                "acme",
                {"first_name": "Otto", "phone": "2125550100", "state": "NY", "vehicles": "2"},
                lead_type="auto",
            )
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads")
        assert set(await shown_leads(page)) == {str(solar), str(auto)}
        await page.select_option("#type", "auto")
        await submit_filters(page)
        assert "type=auto" in page.url
        assert await shown_leads(page) == [str(auto)]
        headers = [h.strip(" ▲▼") for h in await page.locator("#lead-table thead th a").all_inner_texts()]
        assert headers[1:3] == ["First name", "Phone"]  # auto's own columns: the contact fields
        await page.select_option("#type", "solar")
        await submit_filters(page)
        assert await shown_leads(page) == [str(solar)]


async def test_c4_free_text_search_over_every_field_value(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            ada = await sell(conn, "acme", person(1, first_name="Ada", last_name="Lovelace", phone="4155550123"))
            grace = await sell(conn, "acme", person(2, first_name="Grace", last_name="Hopper", zip="10001"))
            percent = await sell(conn, "acme", person(3, first_name="Percent", last_name="100%_sure"))
            await sell(conn, "bolt", person(4, first_name="Ada", last_name="Other"))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads")

        async def search(text: str) -> list[str]:
            await page.fill("#q", text)
            await htmx(page, lambda: page.press("#q", "Enter"))  # the panel is swapped in place
            assert parse_qs(urlsplit(page.url).query)["q"] == [text]  # and the address bar follows
            return await shown_leads(page)

        assert await search("lovelace") == [str(ada)]  # any case, part of a value
        assert await search("(415) 555-0123") == [str(ada)]  # a phone typed as people type it
        assert await search("+1 415 555 0123") == [str(ada)]
        assert await search("555-0123") == [str(ada)]  # partial numbers keep their digits
        assert await search("person2@LEADS") == [str(grace)]
        assert await search("10001") == [str(grace)]
        assert await search("100%_") == [str(percent)]  # % and _ are characters, not wildcards
        assert await search("nobody like this") == []
        assert "No leads match" in await page.inner_text("#lead-table")
        # The panel was swapped by htmx, not reloaded: the page's own marker survived.
        await page.evaluate("window.leadwireMarker = 1")
        await search("ada")
        assert await page.evaluate("window.leadwireMarker") == 1


async def test_c5_sorting_by_any_column_with_keyset_pages(page, mail_settings, smtp):
    total = PAGE_SIZE * 2 + 7
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        now = datetime.now(UTC)
        async with site.db() as conn:
            for n in range(total):
                await sell(
                    conn,
                    "acme",
                    person(n, first_name=f"Name{(n * 37) % total:03d}", monthly_bill=f"{(n * 53) % 1000}.00"),
                    completed_at=now - timedelta(minutes=n),
                    price=f"{10 + n % 7}.00",
                )
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads")

        async def all_pages(name: str) -> list[str]:
            values = await column(page, name)
            while await page.locator("a[rel=next]").count():
                await htmx(page, lambda: page.click("a[rel=next]"))
                values += await column(page, name)
            return values

        async def sort_by(header: str) -> None:
            await htmx(page, lambda: page.click(f"#lead-table thead >> text={header}"))

        await sort_by("First name")
        assert "sort=f.first_name&dir=asc" in page.url
        names = await all_pages("first_name")
        assert names == sorted(names) and len(names) == total == len(set(names))  # each once, in order

        await page.goto(f"{site.url}/leads")
        await sort_by("First name")
        await sort_by("First name")  # again: descending
        assert "sort=f.first_name&dir=desc" in page.url
        assert await column(page, "first_name") == sorted(names, reverse=True)[:PAGE_SIZE]

        # A money field sorts by amount, not as text (text order would put "99.00" after "100.00").
        await sort_by("Monthly bill")
        bills = await all_pages("monthly_bill")
        assert [float(b) for b in bills] == sorted(float(b) for b in bills) and len(bills) == total

        await page.goto(f"{site.url}/leads?sort=price&dir=asc")
        prices = await page.locator("#lead-table tbody td.num").all_inner_texts()
        assert prices == sorted(prices, key=lambda p: float(p.strip("$")))

        # Newest first by default, across pages, with no lead twice.
        await page.goto(f"{site.url}/leads")
        seen = await shown_leads(page)
        while await page.locator("a[rel=next]").count():
            await htmx(page, lambda: page.click("a[rel=next]"))
            seen += await shown_leads(page)
        assert len(seen) == len(set(seen)) == total


async def test_c6_open_lead_from_the_list(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(5, first_name="Ada", last_name="Lovelace"))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads")
        await page.click(f"tr[data-lead='{lead}'] >> text=Open lead")
        await page.wait_for_url(f"{site.url}/leads/{lead}")
        assert await page.inner_text("h1") == "Ada Lovelace"
        await page.click("text=← Leads")
        await page.wait_for_url(f"{site.url}/leads")


async def test_c_export_csv_is_exactly_the_current_filter_row_by_row(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        now = datetime.now(UTC)
        async with site.db() as conn:
            leads = {}
            for n in range(5):
                fields = person(n, state="NV" if n % 2 else "CA")
                leads[await sell(conn, "acme", fields, completed_at=now - timedelta(hours=n))] = fields
            evil = person(9, first_name='=HYPERLINK("http://evil.example","x")', last_name="+1-2", state="NV")
            leads[await sell(conn, "acme", evil, completed_at=now - timedelta(hours=9))] = evil
            await sell(conn, "acme", {"first_name": "Otto", "phone": "2125550100", "state": "NV"}, lead_type="auto")
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads?type=solar&q=NV&sort=f.first_name&dir=asc")
        expected_ids = await shown_leads(page)
        assert len(expected_ids) == 3

        async with page.expect_download() as download_info:
            await page.click("text=Export CSV")
        download = await download_info.value
        assert download.suggested_filename.endswith(".csv")
        text = Path(await download.path()).read_text(encoding="utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["Lead ID"] for r in rows] == expected_ids  # same leads, same order
        for row in rows:
            fields = leads[next(k for k in leads if str(k) == row["Lead ID"])]
            assert row["Lead type"] == "Residential solar"
            assert row["Price"] == "25.00"
            assert row["Email address"] == fields["email"] and row["ZIP code"] == fields["zip"]
            assert row["Phone"] == fields["phone"] and row["State"] == "NV"
        evil_row = next(r for r in rows if "HYPERLINK" in r["First name"])
        assert evil_row["First name"].startswith("'=") and evil_row["Last name"] == "'+1-2"
