"""Bad input on the settings, users, assignment and appointment forms: wrong types, huge values,
NUL characters, ids that are not ids, missing fields — each answered with a page (never a 500),
and nothing written."""

from __future__ import annotations

import uuid

import pytest

from tests.portal_support import assign, person, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# Invalid in every field: nothing may be written.
INVALID = ["\x00", "x" * 5000, "☃" * 300]
# Odd, and valid in some fields (a name may be "<script>"): only the page is checked.
ODD = ["", "<script>alert(1)</script>", "../../etc/passwd", "-1", "1e309"]


async def test_part2b_forms_answer_bad_input_with_a_page_and_write_nothing(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        ann = await site.user("acme", "ann@acme.test", is_admin=True)
        sam = await site.user("acme", "sam@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
            await assign(conn, "acme", lead, sam)
            appointment = uuid.uuid4()
            await conn.execute(
                "INSERT INTO appointments (id, client_id, lead_id, assigned_user_id, title, starts_at,"
                " reminder_minutes, status, last_requested_at) VALUES ($1, 'acme', $2, $3, 'Kept', now() + interval"
                " '1 day', 60, 'scheduled', now())",
                appointment,
                lead,
                sam,
            )
            before = await conn.fetchval(
                "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (SELECT name, phone, is_admin,"
                " view_downline, enabled, notify_new_leads, parent_user_id FROM portal_users) t"
            )
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/settings")
        csrf = await page.get_attribute("#contact input[name=csrf]", "value") or ""
        forms = {
            "/settings/contact": ("name", "phone"),
            "/settings/password": ("current", "password", "confirm"),
            "/users": ("name", "email", "phone", "parent", "is_admin"),
            f"/users/{sam}": ("name", "phone", "parent", "enabled"),
            f"/leads/{lead}/assign": ("assignee",),
            f"/leads/{lead}/appointments": ("appointment_id", "title", "date", "time", "reminder", "assignee"),
            f"/appointments/{appointment}": ("command_id", "title", "date", "time", "reminder", "assignee"),
        }

        async def send_all(values):
            for path, fields in forms.items():
                for value in values:
                    body = {name: value for name in fields}
                    body["csrf"] = csrf
                    response = await page.request.post(f"{site.url}{path}", form=body, max_redirects=0)
                    text = await response.text()
                    assert response.status < 500, (path, repr(value[:20]), response.status)
                    assert "<script>alert(1)</script>" not in text, path  # escaped when shown back

        await send_all(INVALID)
        for path in ("/users/not-an-id", "/appointments/not-an-id", "/leads/not-an-id/assign"):
            response = await page.request.post(f"{site.url}{path}", form={"csrf": csrf}, max_redirects=0)
            assert response.status == 404, path
        for query in ("view=%00", "view=" + "x" * 3000):
            response = await page.request.get(f"{site.url}/appointments?{query}")
            assert response.status == 400
        async with site.db() as conn:
            after = await conn.fetchval(
                "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (SELECT name, phone, is_admin,"
                " view_downline, enabled, notify_new_leads, parent_user_id FROM portal_users) t"
            )
            assert after == before
            assert await conn.fetchval("SELECT count(*) FROM portal_users") == 2
            assert await conn.fetchval("SELECT user_id FROM lead_assignments") == sam
            assert await conn.fetchval("SELECT count(*) FROM appointments") == 1
            assert await conn.fetchval("SELECT title FROM appointments") == "Kept"
        await send_all(ODD)  # never a 500, whatever they change
        assert ann
