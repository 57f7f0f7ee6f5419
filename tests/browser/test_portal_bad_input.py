"""Client Portal, bad input: every query parameter and form of part 1 given wrong types, huge
values, unknown sort columns, bad dates, broken cursors and ids answers with a clear message on
the page (beside the field where there is one) — never a 500 — and writes nothing."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.portal_support import person, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


LIST_PARAMS = [
    # (query, status, the message the page shows)
    ("from=2026-13-45", 400, "Enter the start date as YYYY-MM-DD"),
    ("from=yesterday", 400, "Enter the start date as YYYY-MM-DD"),
    ("to=99999-01-01", 400, "Enter the end date as YYYY-MM-DD"),
    ("from=1899-01-01&to=1899-01-02", 400, "between 2000 and 2100"),
    ("from=2026-03-10&to=2026-03-01", 400, "The end date is before the start date."),
    ("from=2024-01-01&to=2026-01-01", 400, "A date range can span at most 366 days."),
    ("from=%00", 400, "Enter the start date"),
    ("type=nosuchtype", 400, "Choose a lead type from the list."),
    ("type=%3Cscript%3Ealert(1)%3C/script%3E", 400, "Choose a lead type from the list."),
    ("q=" + "x" * 300, 400, "Search for at most 200 characters."),
    ("sort=evil", 400, "The list cannot be sorted by “evil”."),
    ("sort=f.nosuchfield", 400, "The list cannot be sorted by"),
    ("sort=f.first_name;DROP%20TABLE%20leads", 400, "The list cannot be sorted by"),
    ("sort=" + "s" * 5000, 400, "The list cannot be sorted by"),
    ("dir=sideways", 400, "The sort direction must be asc or desc."),
    ("after=garbage", 400, "That page link is not valid any more"),
    ("after=" + "A" * 10_000, 400, "That page link is not valid any more"),
    (f"after={cursor('x', 'not a date', 'nope')}", 400, "That page link is not valid any more"),
    (f"sort=price&after={cursor('NaN', '2026-01-01T00:00:00+00:00', str(uuid.uuid4()))}", 400, "not valid any more"),
    (
        f"sort=delivered&after={cursor('2026-01-01T00:00:00', '2026-01-01T00:00:00', str(uuid.uuid4()))}",
        400,
        "not valid any more",
    ),
    (
        f"sort=f.first_name&after={cursor(12, '2026-01-01T00:00:00+00:00', str(uuid.uuid4()))}",
        400,
        "not valid any more",
    ),
    ("from=2026-01-01&from=garbage", 400, "Enter the start date"),
    ("q=%27%3B%20DROP%20TABLE%20leads%3B--&sort=f.monthly_bill", 200, "No leads match"),
    ("q=%25%25%25_%5C", 200, "No leads match"),
]


async def test_every_query_parameter_of_the_lead_list_and_export(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            await sell(conn, "acme", person(1))
        await site.login(page, "ann@acme.test")
        for query, status, message in LIST_PARAMS:
            response = await page.request.get(f"{site.url}/leads?{query}")
            body = await response.text()
            assert response.status == status, (query, response.status)
            assert message in body, (query, message)
            export = await page.request.get(f"{site.url}/leads/export.csv?{query}")
            assert export.status == status, (query, export.status)
            if status == 400:
                assert "The export was not made" in await export.text() and message in await export.text()
        # In the browser: the message sits beside its field, and the form keeps what was typed.
        await page.goto(f"{site.url}/leads?from=2026-02-30&q=solar")
        assert "Enter the start date" in await page.inner_text("#from-error")
        assert await page.get_attribute("#from", "aria-invalid") == "true"
        assert await page.input_value("#q") == "solar"


async def test_lead_ids_tokens_and_unknown_pages(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        await site.login(page, "ann@acme.test")
        for path in [
            "/leads/not-a-uuid",
            f"/leads/{uuid.uuid4()}",
            "/leads/" + "9" * 5000,
            f"/leads/{uuid.uuid4()}/print",
            "/leads/%00/export.csv",
            f"/leads/{uuid.uuid4()}/export.json",
            "/nothing-here",
        ]:
            response = await page.request.get(site.url + path)
            assert response.status == 404, path
            assert "There is no such" in await response.text(), path
        for token in ["garbage", "a.b", "x" * 600, "%00"]:
            response = await page.request.get(f"{site.url}/link/{token}")
            assert response.status == 404 and "This link is not valid" in await response.text(), token
        response = await page.request.get(f"{site.url}/reset/whatever")
        assert response.status == 200  # the form; the token is judged when it is used
        assert (await page.request.post(f"{site.url}/leads/{uuid.uuid4()}/print")).status == 405


async def test_every_form_with_bad_values(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
            no_email = await sell(conn, "acme", person(2, email=""))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        csrf = await page.get_attribute("#forward input[name=csrf]", "value")
        fresh = str(uuid.uuid4())
        contact = {"csrf": csrf, "notification_id": fresh, "subject": "Hello", "message": "Hi"}
        forward = {"csrf": csrf, "notification_id": fresh, "to": "a@b.example", "note": ""}
        cases = [
            (f"/leads/{lead}/contact", {**contact, "subject": ""}, "Enter a subject."),
            (f"/leads/{lead}/contact", {**contact, "subject": "s" * 300}, "Keep the subject under 200 characters."),
            (f"/leads/{lead}/contact", {**contact, "message": "   "}, "Write a message."),
            (f"/leads/{lead}/contact", {**contact, "message": "m" * 6000}, "Keep the message under 5000 characters."),
            (f"/leads/{lead}/contact", {**contact, "notification_id": "nope"}, "This form expired."),
            (f"/leads/{lead}/contact", {k: v for k, v in contact.items() if k != "subject"}, "Enter a subject."),
            (f"/leads/{no_email}/contact", contact, "This lead has no email address to write to."),
            (f"/leads/{lead}/forward", {**forward, "to": ""}, "Enter at least one email address."),
            (f"/leads/{lead}/forward", {**forward, "to": "nobody"}, "“nobody” is not an email address."),
            (
                f"/leads/{lead}/forward",
                {**forward, "to": ",".join(f"p{n}@x.example" for n in range(6))},
                "Forward to at most 5 addresses at once.",
            ),
            (f"/leads/{lead}/forward", {**forward, "to": "a@b.example " * 300}, "That is too many addresses."),
            (f"/leads/{lead}/forward", {**forward, "note": "n" * 6000}, "Keep the note under 5000 characters."),
            (f"/leads/{lead}/forward", {**forward, "to": "<script>@x.example"}, "is not an email address."),
            ("/login", {"email": "", "password": ""}, "Enter your email address."),
            ("/login", {"email": "e" * 400, "password": "x"}, "Enter the email address you sign in with."),
            ("/login", {"email": "ann@acme.test", "password": "p" * 2000}, "That password is too long."),
            ("/forgot", {"email": "not an email"}, "Enter the email address you sign in with."),
            (
                "/reset/whatever",
                {"password": "a long enough one", "confirm": "different"},
                "The two passwords are not the same.",
            ),
            ("/reset/whatever", {"password": "p" * 2000, "confirm": "p" * 2000}, "Use at most 1024 characters."),
            (
                "/reset/" + "t" * 600,
                {"password": "a long enough one", "confirm": "a long enough one"},
                "This link is not valid.",
            ),
        ]
        for path, form, message in cases:
            if not path.startswith(("/leads",)):
                await page.goto(f"{site.url}/forgot")  # a sign-in form's token (pre-session cookie)
                form = {**form, "csrf": await page.get_attribute("input[name=csrf]", "value")}
            response = await page.request.post(site.url + path, form=form, max_redirects=0)
            body = await response.text()
            assert 400 <= response.status < 500, (path, form.get("to", ""), response.status)
            assert message in body, (path, message)
        # A file where text belongs is no text; a body over 64 KB is refused before it is read.
        response = await page.request.post(
            f"{site.url}/leads/{lead}/contact",
            multipart={**contact, "subject": {"name": "s.txt", "mimeType": "text/plain", "buffer": b"x"}},
        )
        assert response.status == 400 and "Enter a subject." in await response.text()
        response = await page.request.post(f"{site.url}/leads/{lead}/forward", form={**forward, "note": "n" * 70_000})
        assert response.status == 413 and "larger than" in await response.text()

        # In the browser: the error beside the field, the values kept.
        await page.goto(f"{site.url}/leads/{lead}")
        await page.click("#contact summary")
        await page.fill("#contact-subject", "s" * 200)
        await page.fill("#contact-message", "")
        await page.click("#contact button[type=submit]")
        assert await page.inner_text("#contact-message-error") == "Write a message."
        assert await page.input_value("#contact-subject") == "s" * 200

        async with site.db() as conn:  # nothing half-written
            assert await conn.fetchval("SELECT count(*) FROM portal_activity") == 0
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key LIKE 'notify.lead%'") == 0
        assert not smtp.of_kind("lead_contact") and not smtp.of_kind("lead_forward")
