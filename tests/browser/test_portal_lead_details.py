"""Client Portal, a lead's page (D1–D4, D8) in a real browser: the lead's fields with their labels,
delivered date, price, lead type and return status; emailing the contact and forwarding the lead
(caught by a real SMTP server; a form sent twice sends once); printing; exporting CSV and JSON."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.portal_support import LA, person, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def add_return(conn, client_id: str, lead_id: uuid.UUID, status: str) -> None:
    """A return request as the returns service records it."""
    await conn.execute(
        "INSERT INTO returns (id, client_id, lead_id, reason, status, holds_lead, requested_at)"
        " VALUES ($1, $2, $3, 'wrong_number', $4, true, now())",
        uuid.uuid4(),
        client_id,
        lead_id,
        status,
    )


async def test_d8_the_lead_page_shows_its_fields_with_labels_and_its_facts(page, mail_settings, smtp):
    delivered = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)  # 23:30 the day before in Los Angeles
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(3, zip="94110-1234"), completed_at=delivered, price="31.75")
            returned = await sell(conn, "acme", person(4))
            await add_return(conn, "acme", returned, "pending")
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        assert await page.inner_text("h1") == "Person3 Surname3"
        labels = await page.locator("#lead-fields dt").all_inner_texts()
        assert labels == ["First name", "Last name", "Email address", "Phone", "State", "ZIP code", "Monthly bill"]
        assert await page.inner_text("[data-field=zip]") == "94110-1234"
        facts = await page.inner_text("#lead-facts")
        assert "2026-02-28 23:30" in facts and LA in facts
        assert "$31.75" in facts and "Residential solar" in facts and "Not returned" in facts
        assert str(lead) in facts

        await page.goto(f"{site.url}/leads/{returned}")
        assert "Return pending" in await page.inner_text("#lead-facts")
        await page.goto(f"{site.url}/leads")
        assert await page.inner_text(f"tr[data-lead='{returned}'] .badge") == "Return pending"


async def test_d1_email_the_contact_once_per_form(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1, email="ada@home.example"))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        await page.click("#contact summary")
        assert "ada@home.example" in await page.inner_text("#contact")
        assert await page.get_attribute("#contact a[href^=mailto]", "href") == "mailto:ada@home.example"

        await page.click("#contact button[type=submit]")  # empty: errors beside the fields
        assert await page.inner_text("#contact-subject-error") == "Enter a subject."
        assert await page.inner_text("#contact-message-error") == "Write a message."

        await page.fill("#contact-subject", "Your solar quote")
        await page.fill("#contact-message", "Hello Ada,\nwhen may we call you?")
        form = {
            "csrf": await page.get_attribute("#contact input[name=csrf]", "value"),
            "notification_id": await page.get_attribute("#contact input[name=notification_id]", "value"),
            "subject": "Your solar quote",
            "message": "Hello Ada,\nwhen may we call you?",
        }
        await page.click("#contact button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?sent=contact")
        assert await page.inner_text(".notice") == "Your email to the contact is on its way."
        # The same form sent again (a double click, a browser retry) sends nothing more.
        again = await page.request.post(f"{site.url}/leads/{lead}/contact", form=form, max_redirects=0)
        assert again.status == 303

        await site.emails(1)
        await asyncio.sleep(1.0)  # time for a second email, were one on its way
        [mail] = smtp.received
        assert mail.kind == "lead_contact" and mail.rcpt_tos == ["ada@home.example"]
        assert mail.subject == "Your solar quote"
        assert mail.message["Reply-To"] == "ann@acme.test"
        assert "when may we call you?" in mail.text()
        assert "4155550001" not in mail.text()  # the lead record is never in it
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM portal_activity") == 1
        await page.reload()
        assert "Emailed the contact: Your solar quote" in await page.inner_text("#activity")


async def test_d2_forward_the_lead_to_addresses(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(2, first_name="Grace", last_name="Hopper"))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        await page.click("#forward summary")
        await page.fill("#forward-to", "boss@acme.example, not-an-address")
        await page.click("#forward button[type=submit]")
        assert await page.inner_text("#forward-to-error") == "“not-an-address” is not an email address."
        assert await page.input_value("#forward-to") == "boss@acme.example, not-an-address"  # kept

        await page.fill("#forward-to", "boss@acme.example; Partner@Other.example")
        await page.fill("#forward-note", "Hot one, call today.")
        await page.click("#forward button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?sent=forward")
        await site.emails(1)
        [mail] = smtp.received
        assert mail.kind == "lead_forward"
        assert sorted(mail.rcpt_tos) == ["boss@acme.example", "partner@other.example"]
        text = mail.text()
        assert "Hot one, call today." in text and "Grace" in text and "4155550002" in text
        assert mail.message["Reply-To"] == "ann@acme.test"


async def test_d3_print_shows_the_lead_without_the_portal_around_it(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(6, first_name="Alan", last_name="Turing"))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        assert await page.is_visible("nav.sidebar") and await page.is_visible("#forward")
        await page.emulate_media(media="print")  # what the printer gets from the lead page itself
        assert not await page.is_visible("nav.sidebar")
        assert not await page.is_visible(".topbar") and not await page.is_visible("#forward")
        assert not await page.is_visible("text=Export CSV")
        assert await page.is_visible("#lead-fields") and await page.is_visible("text=Alan Turing")

        # Without script, the Print link opens a print sheet: the lead alone.
        await page.emulate_media(media="screen")
        await page.goto(f"{site.url}/leads/{lead}/print")
        assert await page.locator("nav.sidebar").count() == 0
        assert await page.inner_text("h1") == "Alan Turing"
        assert await page.inner_text("[data-field=last_name]") == "Turing"
        pdf = await page.pdf()
        assert pdf.startswith(b"%PDF") and len(pdf) > 1000


async def test_d4_export_one_lead_as_csv_and_json(page, mail_settings, smtp):
    delivered = datetime.now(UTC) - timedelta(days=1)
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        fields = person(8, first_name="@SUM(A1)", monthly_bill="250.00")
        async with site.db() as conn:
            lead = await sell(conn, "acme", fields, completed_at=delivered, price="40.00")
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")

        async with page.expect_download() as info:
            await page.click(".actions >> text=Export CSV")
        download = await info.value
        assert download.suggested_filename == f"lead-{lead}.csv"
        [row] = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text(encoding="utf-8-sig"))))
        assert row["Lead ID"] == str(lead)
        assert row["Delivered"] == delivered.astimezone(ZoneInfo(LA)).strftime("%Y-%m-%d %H:%M")
        assert row["Lead type"] == "Residential solar" and row["Price"] == "40.00"
        assert row["First name"] == "'@SUM(A1)"  # guarded: a spreadsheet shows it, never runs it
        assert row["Email address"] == fields["email"] and row["Monthly bill"] == "250.00"

        async with page.expect_download() as info:
            await page.click(".actions >> text=Export JSON")
        download = await info.value
        document = json.loads(Path(await download.path()).read_text(encoding="utf-8"))
        assert document["lead_id"] == str(lead)
        assert document["fields"] == fields  # as stored: JSON needs no guard
        assert document["labels"]["zip"] == "ZIP code"
        assert document["price"] == "40.00" and document["lead_type"] == "solar"
        assert datetime.fromisoformat(document["delivered_at"]) == delivered
