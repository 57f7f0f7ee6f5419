"""Client Portal, the dashboard (B1–B5) in a real browser: leads received per day this month and
last month in the client's time zone (one SVG chart, its numbers beside it), leads and appointments
per day, upcoming appointments, the most recent leads — and the counts equal what the real router
and delivery sold."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml

from services.portal.rules import add_months, days_in_month
from tests.notifier_support import publish_event
from tests.portal_support import LA, assign, person, portal_catalog, running_site, sell
from tests.support import lead_body, new_key, publish_raw, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

ZONE = ZoneInfo(LA)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A local time in Los Angeles, as a UTC instant."""
    return datetime.combine(day, time(hour, minute), tzinfo=ZONE).astimezone(UTC)


async def table(page, selector: str) -> list[list[str]]:
    rows = await page.locator(f"{selector} tbody tr").all()
    # text_content, not inner_text: the numbers sit in a closed <details> (not rendered).
    return [[t.strip() for t in await row.locator("td").all_text_contents()] for row in rows]


async def test_b1_b2_leads_received_per_day_this_month_and_last_in_the_clients_time_zone(page, mail_settings, smtp):
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.astimezone(ZONE).date()
    this_month, last_month = today.replace(day=1), add_months(today.replace(day=1), -1)
    sold: list[datetime] = [
        at(this_month, 0, 30),  # 08:30 UTC: the 1st in Los Angeles
        at(last_month, 23, 30),  # the 2nd in UTC, still the 1st here
        at(last_month + timedelta(days=days_in_month(last_month) - 1), 23, 59),  # last month's last day
        at(last_month, 9),
        at(last_month + timedelta(days=4), 12),
        at(add_months(last_month, -1), 12),  # two months ago: on neither line
    ]
    sold += [at(today, 0, 1)] * 3 if now >= at(today, 0, 1) else []
    async with running_site(mail_settings, smtp, clock=lambda: now) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            for n, instant in enumerate(sold):
                await sell(conn, "acme", person(n), completed_at=instant)
            await sell(conn, "acme", person(90), completed_at=at(today, 0, 1), status="failed")
            await sell(conn, "bolt", person(91), completed_at=at(this_month, 12))
        expected = Counter(instant.astimezone(ZONE).date() for instant in sold if instant <= now)
        await site.login(page, "ann@acme.test")

        this_total = sum(n for d, n in expected.items() if d >= this_month)
        last_total = sum(n for d, n in expected.items() if last_month <= d < this_month)
        assert await page.inner_text("#total-this-month") == str(this_total)
        assert await page.inner_text("#total-last-month") == str(last_total)
        rows = await table(page, "#received-per-day")
        assert len(rows) == max(days_in_month(this_month), days_in_month(last_month))
        for day_number, last, this in rows:
            d = int(day_number)
            if d <= days_in_month(last_month):
                assert last == str(expected.get(last_month.replace(day=d), 0)), d
            else:
                assert last == ""
            if d <= today.day:
                assert this == str(expected.get(this_month.replace(day=d), 0)), d
            else:
                assert this == ""  # the month has not got there yet
        # One chart, drawn on the server: two lines, one point per day so far.
        chart = page.locator("[aria-labelledby=received-title] svg")
        assert await chart.locator("polyline").count() == 2
        assert await chart.locator("polyline.series-last").get_attribute("points") is not None
        assert await chart.locator("g.series-this circle").count() == today.day
        assert await chart.locator("g.series-last circle").count() == days_in_month(last_month)


async def test_b3_b4_leads_and_appointments_per_day_and_upcoming_appointments(page, mail_settings, smtp):
    now = datetime.now(UTC).replace(microsecond=0)
    async with running_site(mail_settings, smtp, clock=lambda: now) as site:
        admin = await site.user("acme", "ann@acme.test", is_admin=True)
        carl = await site.user("acme", "carl@acme.test", is_admin=False)
        async with site.db() as conn:
            leads = [await sell(conn, "acme", person(n)) for n in range(3)]
            await assign(conn, "acme", leads[2], carl)
        plans = [
            (leads[0], admin, now + timedelta(days=2), "Site survey"),
            (leads[1], admin, now + timedelta(hours=5), "First call"),
            (leads[2], carl, now + timedelta(days=1), "Carl's call"),
            (leads[0], admin, now - timedelta(hours=2), "Already happened"),
        ]
        ids = []
        for lead, user, starts, title in plans:
            ids.append(uuid.uuid4())
            await publish_event(
                mail_settings,
                "appointment.create",
                {
                    "appointment_id": str(ids[-1]),
                    "client_id": "acme",
                    "lead_id": str(lead),
                    "assigned_user_id": str(user),
                    "starts_at": starts.isoformat(),
                    "title": title,
                    "requested_at": now.isoformat(),
                },
            )
        await publish_event(
            mail_settings,
            "appointment.cancel",
            {
                "appointment_id": str(ids[0]),
                "client_id": "acme",
                "requested_at": (now + timedelta(seconds=1)).isoformat(),
            },
        )

        async def settled() -> bool:
            async with site.db() as conn:
                return await conn.fetchval("SELECT count(*) FILTER (WHERE status = 'cancelled') FROM appointments") == 1

        await wait_for(settled)
        await site.login(page, "ann@acme.test")
        # B3: today's leads and appointments made today (cancelled ones were made too).
        today = now.astimezone(ZONE).date()
        assert await page.inner_text("#total-appointments") == "4"
        today_row = (await table(page, "#work-per-day"))[-1]
        assert today_row == [today.isoformat(), "3", "4"]
        assert await page.locator("[aria-labelledby=work-title] svg g.series-appointments rect").count() == 1
        # B4: upcoming, soonest first; cancelled and past ones are not.
        upcoming = await table(page, "#upcoming")
        assert [r[1] for r in upcoming] == ["First call", "Carl's call"]
        assert upcoming[1][2] == "Person2 Surname2" and upcoming[1][3] == "carl"

        # A user with scope "own" sees their own appointments only.
        await page.context.clear_cookies()
        await site.login(page, "carl@acme.test")
        assert [r[1] for r in await table(page, "#upcoming")] == ["Carl's call"]
        assert await page.inner_text("#total-appointments") == "1"


async def test_b5_the_most_recent_leads_newest_first(page, mail_settings, smtp):
    now = datetime.now(UTC).replace(microsecond=0)
    async with running_site(mail_settings, smtp, clock=lambda: now) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            leads = [
                await sell(conn, "acme", person(n), completed_at=now - timedelta(days=40, minutes=n)) for n in range(12)
            ]
        await site.login(page, "ann@acme.test")
        shown = [await r.get_attribute("data-lead") for r in await page.locator("#recent tbody tr").all()]
        assert shown == [str(lead) for lead in leads[:10]]  # 40 days ago still counts: no date range here
        await page.click("#recent >> text=Person0 Surname0")
        await page.wait_for_url(f"{site.url}/leads/{leads[0]}")


async def test_dashboard_counts_equal_what_the_router_and_delivery_sold(page, mail_settings, smtp, buyer):
    # acme's endpoint refuses every third lead; those go to bolt (the group is exclusive).
    count = {"n": 0}

    def acme(_request):
        count["n"] += 1
        return (200, '{"status": "rejected"}', 0.0) if count["n"] % 3 == 0 else (200, '{"status": "ok"}', 0.0)

    buyer.responses["/b/acme"] = acme
    doc = yaml.safe_load(portal_catalog(buyer.url("/b")))
    for account in doc["delivery_accounts"]:
        if account["client"] == "acme":
            account["delivery"]["success"] = {"json_path": "status", "json_equals": "ok"}
    catalog = yaml.safe_dump(doc)
    async with running_site(
        mail_settings, smtp, catalog=catalog, services=("portal_auth", "notifier", "router", "delivery")
    ) as site:
        await site.user("acme", "ann@acme.test")
        for n in range(12):
            await publish_raw(
                mail_settings,
                lead_body(f"415555{n:04d}", last_name=f"Pipeline{n}"),
                headers={"idempotency-key": new_key()},
            )

        async def all_decided() -> bool:
            async with site.db() as conn:
                return await conn.fetchval("SELECT count(*) FROM leads WHERE status <> 'routing'") == 12

        await wait_for(all_decided, timeout=30)
        async with site.db() as conn:
            sold_to_acme = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE client_id = 'acme' AND status = 'succeeded'"
            )
        assert 0 < sold_to_acme < 12
        await site.login(page, "ann@acme.test")
        assert await page.inner_text("#total-this-month") == str(sold_to_acme)
        await page.goto(f"{site.url}/leads")
        assert await page.inner_text("#lead-count strong") == str(sold_to_acme)
