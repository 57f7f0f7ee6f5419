"""50 users of one buyer click "Return" at once, over HTTP, against a 10% cap: the portal, the
real returns service and PostgreSQL between them let exactly the allowance through, and every
user's page says what happened to their request."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from harness.smtp import SmtpSink, free_port
from tests.portal_auth_support import PASSWORD
from tests.portal_support import assign, person, running_site, sell

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
RETURN_ID = re.compile(r'name="return_id" value="([^"]+)"')
KIND = re.compile(r'id="return-outcome"[^>]*data-kind="(\w+)"')


async def signed_in(base: str, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=True)
    page = await client.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf is not None
    answer = await client.post("/login", data={"email": email, "password": PASSWORD, "csrf": csrf.group(1)})
    assert answer.url.path.endswith("/dashboard"), answer.text[:500]
    return client


async def test_fifty_users_return_at_once_against_a_ten_percent_cap_and_the_cap_holds(settings):
    smtp = SmtpSink(free_port())
    smtp.start()
    try:
        async with running_site(settings, smtp, services=("portal_auth", "returns")) as site:
            at = datetime.now(UTC) - timedelta(minutes=10)
            async with site.db() as conn:
                leads = [await sell(conn, "acme", person(n), completed_at=at) for n in range(100)]
            users = [await site.user("acme", f"user{n}@acme.test") for n in range(50)]
            async with site.db() as conn:
                for lead, user in zip(leads, users, strict=False):
                    await assign(conn, "acme", lead, user)  # each user sees (and returns) their own lead
            clients = await asyncio.gather(*(signed_in(site.url, f"user{n}@acme.test") for n in range(50)))
            try:
                forms = []
                for client, lead in zip(clients, leads, strict=False):
                    page = await client.get(f"/leads/{lead}/return")
                    assert page.status_code == 200
                    assert "0 of 10 used" in page.text
                    csrf, return_id = CSRF.search(page.text), RETURN_ID.search(page.text)
                    assert csrf is not None and return_id is not None
                    forms.append(
                        (
                            client,
                            lead,
                            {"csrf": csrf.group(1), "return_id": return_id.group(1), "reason": "wrong_number"},
                        )
                    )
                answers = await asyncio.gather(
                    *(client.post(f"/leads/{lead}/return", data=form) for client, lead, form in forms)
                )
            finally:
                await asyncio.gather(*(c.aclose() for c in clients))
            kinds = []
            for answer in answers:
                assert answer.status_code == 200, answer.text[:300]
                kind = KIND.search(answer.text)
                assert kind is not None
                kinds.append(kind.group(1))
            assert kinds.count("accepted") == 10
            assert kinds.count("refused") == 40
            refused = [a.text for a in answers if 'data-kind="refused"' in a.text]
            assert all("return allowance is used up" in text for text in refused)
            async with site.db() as conn:
                statuses = dict(await conn.fetch("SELECT status, count(*) FROM returns GROUP BY status"))
                held = await conn.fetchval("SELECT count(*) FROM returns WHERE holds_lead")
            assert statuses == {"pending": 10, "denied": 40}
            assert held == 10
            # Each user's request is theirs: one return per lead, by that lead's user.
            async with site.db() as conn:
                rows = await conn.fetch("SELECT lead_id, requested_by FROM returns")
            by_lead = {r["lead_id"]: r["requested_by"] for r in rows}
            assert by_lead == {lead: f"user{n}@acme.test" for n, lead in enumerate(leads[:50])}
    finally:
        smtp.stop()
