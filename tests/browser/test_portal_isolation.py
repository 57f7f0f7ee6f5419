"""Client Portal isolation: signed in as client A, every route and form of the portal, fed client B's
lead ids, link tokens, cursors and CSRF token, shows none of B's data (another client's lead is a
404, never a 403); and within a client, users with scope "own" or "downline" see only the leads
assigned to them (or below them)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.portal.web import PAGES
from shared import api_keys
from shared.portal_links import issue_link_token
from tests.portal_support import assign, person, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def crafted_cursor(key: str, completed_at: datetime, delivery_id: uuid.UUID) -> str:
    raw = json.dumps([key, completed_at.isoformat(), str(delivery_id)]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_client_a_sees_none_of_client_bs_data_on_any_route(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        await site.user("bolt", "bea@bolt.test", is_admin=True)
        now = datetime.now(UTC)
        async with site.db() as conn:
            a_lead = await sell(conn, "acme", person(1))
            b_leads = [
                await sell(conn, "bolt", person(50 + n, first_name=f"BoltSecret{n}", email=f"secret{n}@bolt.example"))
                for n in range(3)
            ]
            b_delivery = await conn.fetchval("SELECT id FROM deliveries WHERE lead_id = $1", b_leads[0])
            # B's users' activity and appointments exist too.
            b_appointment = uuid.uuid4()
            bea = await conn.fetchval("SELECT id FROM portal_users WHERE email = 'bea@bolt.test'")
            await conn.execute(
                "INSERT INTO portal_activity (id, client_id, lead_id, user_id, kind, recipients, subject)"
                " VALUES ($1, 'bolt', $2, $3, 'lead_forward', '{x@bolt.example}', 'BoltSecret subject')",
                uuid.uuid4(),
                b_leads[0],
                bea,
            )
            await conn.execute(
                "INSERT INTO appointments (id, client_id, lead_id, assigned_user_id, title, starts_at,"
                " reminder_minutes, status, last_requested_at) VALUES ($1, 'bolt', $2, $3, 'BoltSecret meeting',"
                " $4, 60, 'scheduled', now())",
                b_appointment,
                b_leads[0],
                bea,
                now + timedelta(days=1),
            )
        async with site.db() as conn:
            b_key = await api_keys.create_buyer_key(conn, "bolt", label="BoltSecret key")
        b_link = issue_link_token(mail_settings.portal_link_secret, client_id="bolt", lead_id=b_leads[0], issued_at=now)
        secrets = [str(b) for b in b_leads] + ["BoltSecret", "secret0@bolt.example", "4155550050", str(b_delivery)]
        secrets.append(b_key.key_id)  # A's API keys page lists none of B's keys

        # B's CSRF token, from B's own session.
        await site.login(page, "bea@bolt.test")
        await page.goto(f"{site.url}/leads/{b_leads[0]}")
        b_csrf = await page.get_attribute("#forward input[name=csrf]", "value")
        await page.context.clear_cookies()

        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{a_lead}")
        a_csrf = await page.get_attribute("#forward input[name=csrf]", "value")

        b = str(b_leads[0])
        cursor = crafted_cursor(now.isoformat(), now + timedelta(hours=1), b_delivery)
        gets = {
            "/": [""],
            "/login": [""],
            "/forgot": [""],
            "/dashboard": [""],
            "/leads": [
                "",
                "?q=BoltSecret",
                "?q=bolt.example",
                f"?q={b}",
                "?type=solar&sort=f.first_name",
                f"?after={cursor}",
                "?sort=price&dir=asc",
            ],
            "/leads/export.csv": ["", "?q=BoltSecret", f"?after={cursor}"],
            "/leads/{lead_id}": [""],
            "/leads/{lead_id}/print": [""],
            "/leads/{lead_id}/export.csv": [""],
            "/leads/{lead_id}/export.json": [""],
            "/link/{token}": [""],
            "/reset/{token}": [""],
            "/returns": ["", "?status=pending", "?from=2020-01-01"],
            "/leads/{lead_id}/return": ["", f"?return_id={uuid.uuid4()}"],
            "/orders": ["", "?done=paused&order=bolt-q"],
            "/settings": [""],
            "/users": [""],
            "/users/new": [""],
            "/api-keys": [""],
            "/users/{user_id}": [""],
            "/appointments": ["", "?view=past", "?view=cancelled"],
            "/appointments/{appointment_id}": [""],
            "/leads/{lead_id}/appointments/new": [""],
            "/leads/{lead_id}/files": ["", "?done=uploaded"],
            "/leads/{lead_id}/files/{file_id}": [""],
        }
        posts = {
            "/leads/{lead_id}/contact": {"subject": "hi", "message": "hello"},
            "/leads/{lead_id}/forward": {"to": "me@acme.example", "note": ""},
            "/leads/{lead_id}/return": {"reason": "wrong_number", "return_id": str(uuid.uuid4())},
            "/orders/{order_id}/pause": {},  # B's orders: tests/browser/test_portal_orders.py
            "/orders/{order_id}/resume": {},
            # An upload's CSRF field is read from its streamed body, after the lead is found: 404.
            "/leads/{lead_id}/files": {},
            "/leads/{lead_id}/files/{file_id}/delete": {},
            "/logout": {},
            "/logout-everywhere": {},
            "/login": {"email": "bea@bolt.test", "password": "x"},
            "/forgot": {"email": "bea@bolt.test"},
            "/reset/{token}": {"password": "x", "confirm": "x"},
            "/leads/{lead_id}/assign": {"assignee": "{user_id}"},
            "/leads/{lead_id}/disposition": {"disposition": "won", "note": "Owned"},
            "/users/{user_id}": {"name": "Owned"},
            "/users/{user_id}/invite": {},
            "/leads/{lead_id}/appointments": {
                "appointment_id": str(uuid.uuid4()),
                "title": "x",
                "date": "2099-01-01",
                "time": "10:00",
                "reminder": "60",
                "assignee": "{user_id}",
            },
            "/appointments/{appointment_id}": {"title": "Owned", "date": "2099-01-01", "time": "10:00"},
            "/appointments/{appointment_id}/cancel": {"command_id": str(uuid.uuid4())},
            # A's own settings and users: nothing of B's to reach (run last, below).
            "/settings/contact": {"name": "A"},
            "/settings/notifications": {},
            "/settings/password": {"current": "x", "password": "y", "confirm": "y"},
            "/users": {"name": "x", "email": "x@acme.test"},
            "/api-keys": {"label": "A's key"},
            "/api-keys/{key_id}/revoke": {},
            # A's own list form, fed B's lead: skipped, nothing written (run below).
            "/leads/assign": {"lead": "{lead_id}", "assignee": "{user_id}"},
        }
        # Every route the portal has is in this crawl: a new page must be added here.
        routes = {
            (method, route.path)
            for module in PAGES
            for route in module.router.routes
            for method in getattr(route, "methods", ())
        }
        crawled = {("GET", p) for p in gets} | {("POST", p) for p in posts}
        assert routes <= crawled, routes - crawled

        def url(path: str) -> str:
            return site.url + path.replace("{lead_id}", b).replace("{token}", b_link).replace(
                "{user_id}", str(bea)
            ).replace("{appointment_id}", str(b_appointment)).replace("{key_id}", b_key.key_id)

        for path, queries in gets.items():
            for query in queries:
                asked = url(path) + query
                response = await page.request.get(asked, max_redirects=0)
                body = await response.text()
                assert response.status < 500, (path, query, response.status)
                for secret in secrets:
                    if secret not in asked:  # a search box shows what was searched for
                        assert secret not in body, (path, query, secret)
                if any(p in path for p in ("{lead_id}", "{user_id}", "{appointment_id}", "{key_id}")):
                    assert response.status == 404, path  # not 403: B's lead or user does not exist for A
        for path, form in posts.items():
            if path.startswith(("/logout", "/login", "/forgot", "/reset", "/settings")) or path in (
                "/users",
                "/api-keys",
                "/leads/assign",
            ):
                continue  # these touch no lead or user of B's; they run last, below
            for csrf in (a_csrf, b_csrf):
                fields = {k: v.replace("{user_id}", str(bea)) for k, v in form.items()}
                fields.update(csrf=csrf, notification_id=str(uuid.uuid4()))
                response = await page.request.post(url(path), form=fields, max_redirects=0)
                body = await response.text()
                assert response.status in (403, 404), (path, response.status)
                assert response.status == (404 if csrf == a_csrf or path.endswith("/files") else 403)
                for secret in secrets:
                    assert secret not in body, (path, secret)
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM portal_activity WHERE client_id = 'acme'") == 0
            assert await conn.fetchval("SELECT count(*) FROM lead_assignments") == 0
            assert await conn.fetchval("SELECT revoked_at FROM buyer_api_keys WHERE key_id = $1", b_key.key_id) is None
            assert await conn.fetchval("SELECT status || title FROM appointments") == "scheduledBoltSecret meeting"
            assert await conn.fetchval("SELECT name FROM portal_users WHERE id = $1", bea) != "Owned"
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key LIKE 'notify.lead%'") == 0
            assert await conn.fetchval("SELECT count(*) FROM returns") == 0
            assert await conn.fetchval("SELECT count(*) FROM buyer_lead_dispositions") == 0

        # A's own settings and users forms answer A, with nothing of B's.
        own = (
            "/settings/contact",
            "/settings/notifications",
            "/settings/password",
            "/users",
            "/api-keys",
            "/leads/assign",
        )
        for path in own:
            fields = {k: v.replace("{lead_id}", b).replace("{user_id}", str(bea)) for k, v in posts[path].items()}
            response = await page.request.post(url(path), form={**fields, "csrf": a_csrf or ""}, max_redirects=0)
            body = await response.text()
            assert response.status < 500, (path, response.status)
            if path == "/leads/assign":
                assert "bulk_skipped=1" in response.headers["location"]
                async with site.db() as conn:
                    assert await conn.fetchval("SELECT count(*) FROM lead_assignments") == 0
            assert not any(secret in body for secret in secrets), path

        # The export as A holds A's lead and nothing of B's.
        export = await (await page.request.get(f"{site.url}/leads/export.csv")).text()
        assert str(a_lead) in export and not any(s in export for s in secrets)
        # B's CSRF token does not sign A out either.
        response = await page.request.post(f"{site.url}/logout", form={"csrf": b_csrf}, max_redirects=0)
        assert response.status == 403
        await page.goto(f"{site.url}/dashboard")
        assert page.url == f"{site.url}/dashboard"


async def test_users_with_scope_own_or_downline_see_only_their_leads(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        eve = await site.user("acme", "eve@acme.test")
        async with site.db() as conn:
            carls = await sell(conn, "acme", person(1, first_name="Carlslead"))
            danas = await sell(conn, "acme", person(2, first_name="Danaslead"))
            eves = await sell(conn, "acme", person(3, first_name="Eveslead"))
            nobodys = await sell(conn, "acme", person(4, first_name="Unassigned"))
            await assign(conn, "acme", carls, carl)
            await assign(conn, "acme", danas, dana)
            await assign(conn, "acme", eves, eve)
        everyone = {carls, danas, eves, nobodys}
        sees = {
            "admin@acme.test": everyone,  # scope all: assigned or not
            "dana@acme.test": {carls, danas},  # downline: her own and carl's
            "carl@acme.test": {carls},  # own
            "eve@acme.test": {eves},
        }
        for email, visible in sees.items():
            await page.context.clear_cookies()
            await site.login(page, email)
            recent = {await r.get_attribute("data-lead") for r in await page.locator("#recent tbody tr").all()}
            assert recent == {str(v) for v in visible}, email
            assert await page.inner_text("#total-this-month") == str(len(visible))
            await page.goto(f"{site.url}/leads")
            listed = {await r.get_attribute("data-lead") for r in await page.locator("#lead-table tr[data-lead]").all()}
            assert listed == {str(v) for v in visible}, email
            export = await (await page.request.get(f"{site.url}/leads/export.csv")).text()
            assert {str(v) for v in everyone if str(v) in export} == {str(v) for v in visible}, email
            for lead in everyone:
                response = await page.request.get(f"{site.url}/leads/{lead}", max_redirects=0)
                assert response.status == (200 if lead in visible else 404), (email, lead)
            search = await (await page.request.get(f"{site.url}/leads?q=slead")).text()
            shown = set(re.findall(r'data-lead="([0-9a-f-]{36})"', search))
            assert shown == {str(v) for v in visible if v != nobodys}, email
