"""Client Portal appointments (D7, E1–E7) in a real browser, with the real notifier and SMTP:
"Create Appointment" opens the editor below the lead (with and without JavaScript), the time is
the client's wall clock, the assignee is any user the creator may assign and gets the email,
reminders go out as notifier plans them, edit and cancel answer on the page, notifier's refusals
are shown with their reason, and the Appointments tab shows users theirs, View Downline users
their downline's, admins all."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.portal import appointments_client
from shared.contracts import AppointmentCreate
from tests.portal_support import LA, assign, person, running_site, sell
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def _local(days: int = 2, hour: int = 10, minute: int = 30) -> tuple[str, str, datetime]:
    """A wall-clock time in the client's zone `days` from now: (date, time, the UTC instant)."""
    day = (datetime.now(UTC).astimezone(ZoneInfo(LA)) + timedelta(days=days)).date()
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(LA))
    return day.isoformat(), f"{hour:02d}:{minute:02d}", local.astimezone(UTC)


async def _appointments(site):
    async with site.db() as conn:
        return await conn.fetch("SELECT * FROM appointments ORDER BY created_at")


async def _fill(page, *, title, date, time, reminder="60", notes="", assignee=None):
    await page.fill("#appointment-title", title)
    await page.fill("#appointment-date", date)
    await page.fill("#appointment-time", time)
    await page.select_option("#appointment-reminder", reminder)
    await page.fill("#appointment-notes", notes)
    if assignee is not None:
        await page.select_option("#appointment-assignee", str(assignee))


async def test_d7_e1_e5_create_from_the_lead_the_assignee_gets_the_email_and_the_reminder(
    browser, page, mail_settings, smtp
):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        carl = await site.user("acme", "carl@acme.test")
        await site.user("acme", "eve@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1, first_name="Booked"))
            await assign(conn, "acme", lead, carl)

        # Carl (scope own): the editor opens below the lead's appointments, in place (htmx).
        await site.login(page, "carl@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        assert (await page.inner_text("#appointments")).split() == [
            "Appointments",
            "None",
            "yet.",
            "Create",
            "Appointment",
        ]
        await page.click("#create-appointment")
        await page.wait_for_selector("#appointment-editor")
        assert page.url == f"{site.url}/leads/{lead}"  # swapped in, no page load
        assert "America/Los_Angeles" in await page.inner_text("#appointment-editor")
        offered = await page.eval_on_selector_all("#appointment-assignee option", "os => os.map(o => o.value)")
        assert offered == [str(carl)]  # scope own: only himself

        # Bad input: beside the fields, nothing sent.
        day, clock, starts_at = _local()
        yesterday, _, _ = _local(days=-1)
        await _fill(page, title="", date=yesterday, time="")
        await page.click("#appointment-editor button[type=submit]")
        assert await page.inner_text("#appointment-title-error") == "Enter a title."
        assert await page.inner_text("#appointment-time-error") == "Enter the time as HH:MM (24-hour clock)."
        await _fill(page, title="Site visit", date=yesterday, time=clock)
        await page.click("#appointment-editor button[type=submit]")
        assert await page.inner_text("#appointment-date-error") == "Choose a time in the future."
        assert await page.input_value("#appointment-title") == "Site visit"
        assert await _appointments(site) == []

        await _fill(page, title="Site visit", date=day, time=clock, reminder="1440", notes="Bring the roof plan")
        await page.click("#appointment-editor button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=appointment_created")
        assert await page.inner_text(".notice") == "The appointment is saved; its assignee gets an email."
        assert "Site visit" in await page.inner_text("#lead-appointments")
        [row] = await _appointments(site)
        assert (row["title"], row["starts_at"], row["reminder_minutes"], row["assigned_user_id"]) == (
            "Site visit",
            starts_at,
            1440,
            carl,
        )
        assert row["created_by_user_id"] == carl and row["notes"] == "Bring the roof plan"
        await site.emails(1)
        [created] = smtp.of_kind("appointment_created")
        assert created.rcpt_tos == ["carl@acme.test"]
        assert "10:30 (America/Los_Angeles)" in created.text()

        # The same form sent twice (a double click): one appointment.
        await page.goto(f"{site.url}/leads/{lead}/appointments/new")
        csrf = await page.get_attribute("#appointment-editor input[name=csrf]", "value")
        appointment_id = await page.get_attribute("#appointment-editor input[name=appointment_id]", "value")
        form = {
            "csrf": csrf or "",
            "appointment_id": appointment_id or "",
            "title": "Call back",
            "date": day,
            "time": "16:00",
            "reminder": "30",
            "notes": "",
            "assignee": str(carl),
        }
        first = await page.request.post(f"{site.url}/leads/{lead}/appointments", form=form)
        second = await page.request.post(f"{site.url}/leads/{lead}/appointments", form=form)
        assert first.ok and second.ok
        assert "That appointment was saved already." in await second.text()
        assert len(await _appointments(site)) == 2
        # Another user's id as assignee, forged: refused beside the field, nothing sent.
        forged = await page.request.post(
            f"{site.url}/leads/{lead}/appointments",
            form={**form, "appointment_id": str(uuid.uuid4()), "assignee": str(uuid.uuid4())},
        )
        assert forged.status == 400 and "Choose who the appointment is for from the list." in await forged.text()
        assert len(await _appointments(site)) == 2

        # Without JavaScript the button is a link to the same editor, and saving works the same.
        context = await browser.new_context(java_script_enabled=False)
        try:
            plain = await context.new_page()
            await site.login(plain, "carl@acme.test")
            await plain.goto(f"{site.url}/leads/{lead}")
            await plain.click("#create-appointment")
            await plain.wait_for_url(f"{site.url}/leads/{lead}/appointments/new#appointment-editor")
            soon = datetime.now(UTC) + timedelta(minutes=10)
            local = soon.astimezone(ZoneInfo(LA))
            await _fill(plain, title="Quick call", date=local.date().isoformat(), time=f"{local:%H:%M}", reminder="15")
            await plain.click("#appointment-editor button[type=submit]")
            await plain.wait_for_url(f"{site.url}/leads/{lead}?done=appointment_created")
        finally:
            await context.close()

        # E5: starting in 10 minutes with a 15-minute reminder, the reminder is due at once.
        await wait_for(lambda: len(smtp.of_kind("appointment_reminder")) >= 1)
        [reminder] = smtp.of_kind("appointment_reminder")
        assert reminder.rcpt_tos == ["carl@acme.test"] and "Quick call" in reminder.subject


async def test_e3_e7_edit_reassign_cancel_and_notifiers_refusal(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        admin = await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        gone = await site.user("acme", "gone@acme.test", enabled=False)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(2, first_name="Movable"))

        # E3: an admin may give it to any enabled user of the client.
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/appointments/new")
        offered = await page.eval_on_selector_all("#appointment-assignee option", "os => os.map(o => o.value)")
        assert set(offered) == {str(admin), str(dana), str(carl)}
        day, clock, _ = _local(days=3, hour=9, minute=0)
        await _fill(page, title="Survey", date=day, time=clock, assignee=carl)
        await page.click("#appointment-editor button[type=submit]")
        await page.wait_for_url(f"{site.url}/leads/{lead}?done=appointment_created")
        [row] = await _appointments(site)
        await site.emails(1)
        assert smtp.of_kind("appointment_created")[0].rcpt_tos == ["carl@acme.test"]

        # E7: edit — a new time re-plans the reminder; the assignee is told.
        await page.click(f"#lead-appointments tr[data-appointment='{row['id']}'] a")
        await page.wait_for_url(f"{site.url}/appointments/{row['id']}")
        assert await page.input_value("#appointment-date") == day
        assert await page.input_value("#appointment-time") == clock
        new_day, new_clock, new_start = _local(days=4, hour=14, minute=15)
        await _fill(page, title="Survey, moved", date=new_day, time=new_clock)
        await page.click("#edit-appointment button[type=submit]")
        await page.wait_for_url(f"{site.url}/appointments/{row['id']}?done=saved")
        assert await page.inner_text(".notice") == "The appointment is saved; its assignee gets an email."
        [moved] = await _appointments(site)
        assert (moved["title"], moved["starts_at"], moved["reminder_revision"]) == ("Survey, moved", new_start, 1)
        await site.emails(2)
        assert smtp.of_kind("appointment_updated")[0].rcpt_tos == ["carl@acme.test"]

        # Reassigned to Dana: she is told.
        await page.select_option("#appointment-assignee", str(dana))
        await page.click("#edit-appointment button[type=submit]")
        await page.wait_for_url(f"{site.url}/appointments/{row['id']}?done=saved")
        await site.emails(3)
        assert smtp.to("dana@acme.test")[0].kind == "appointment_updated"

        # Cancel: the assignee is told, the page says it is cancelled, no more editing.
        await page.click("#cancel-appointment button[type=submit]")
        await page.wait_for_url(f"{site.url}/appointments/{row['id']}?done=cancelled")
        assert await page.inner_text(".notice") == "The appointment is cancelled; its assignee gets an email."
        assert await page.locator("#edit-appointment").count() == 0
        assert (await _appointments(site))[0]["status"] == "cancelled"
        await site.emails(4)
        assert smtp.of_kind("appointment_cancelled")[0].rcpt_tos == ["dana@acme.test"]

        # notifier's refusal comes back to the caller with its reason (a disabled assignee): the
        # page shows rules.appointment_refusal of it.
        answer = await appointments_client.send(
            site.app.state.rpc,
            site.app.state.runtime.topology,
            AppointmentCreate(
                appointment_id=uuid.uuid4(),
                client_id="acme",
                lead_id=lead,
                assigned_user_id=gone,
                starts_at=datetime.now(UTC) + timedelta(days=1),
                requested_at=datetime.now(UTC),
            ),
            message_id=str(uuid.uuid4()),
        )
        assert isinstance(answer, appointments_client.Refused) and answer.error == "refused"
        assert "disabled" in answer.message
        assert len(await _appointments(site)) == 1


async def test_e6_the_appointments_tab_and_isolation_between_users(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        eve = await site.user("acme", "eve@acme.test")
        bea = await site.user("bolt", "bea@bolt.test", is_admin=True)
        now = datetime.now(UTC)
        ids: dict[str, uuid.UUID] = {}
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(3, first_name="Shared"))
            bolt_lead = await sell(conn, "bolt", person(4, first_name="BoltSecret"))
            for name, client, lead_id, user, starts in (
                ("carl", "acme", lead, carl, now + timedelta(days=1)),
                ("dana", "acme", lead, dana, now + timedelta(days=2)),
                ("eve", "acme", lead, eve, now + timedelta(days=3)),
                ("eve-past", "acme", lead, eve, now - timedelta(days=3)),
                ("bolt", "bolt", bolt_lead, bea, now + timedelta(days=1)),
            ):
                ids[name] = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO appointments (id, client_id, lead_id, assigned_user_id, title, starts_at,"
                    " reminder_minutes, status, last_requested_at) VALUES ($1, $2, $3, $4, $5, $6, 60,"
                    " 'scheduled', now())",
                    ids[name],
                    client,
                    lead_id,
                    user,
                    f"{name} meeting",
                    starts,
                )
        sees = {
            "admin@acme.test": {"carl", "dana", "eve"},
            "dana@acme.test": {"carl", "dana"},
            "carl@acme.test": {"carl"},
            "eve@acme.test": {"eve"},
        }
        for email, visible in sees.items():
            await page.context.clear_cookies()
            await site.login(page, email)
            await page.click("nav.sidebar a:has-text('Appointments')")
            await page.wait_for_url(f"{site.url}/appointments")
            listed = {
                await r.get_attribute("data-appointment")
                for r in await page.locator("#appointment-list tbody tr").all()
            }
            assert listed == {str(ids[n]) for n in visible}, email
            csrf = await page.get_attribute("form input[name=csrf]", "value")
            for name, appointment_id in ids.items():
                if name == "eve-past":
                    continue
                response = await page.request.get(f"{site.url}/appointments/{appointment_id}", max_redirects=0)
                assert response.status == (200 if name in visible else 404), (email, name)
                if name not in visible:
                    body = await response.text()
                    assert f"{name} meeting" not in body and "BoltSecret" not in body
                    for path in (f"/appointments/{appointment_id}", f"/appointments/{appointment_id}/cancel"):
                        forged = await page.request.post(
                            f"{site.url}{path}",
                            form={"csrf": csrf or "", "title": "Taken", "command_id": str(uuid.uuid4())},
                        )
                        assert forged.status == 404, (email, name, path)
        await page.goto(f"{site.url}/appointments?view=past")
        assert "eve-past meeting" in await page.inner_text("#appointment-list")
        assert (await page.request.get(f"{site.url}/appointments?view=everything")).status == 400
        async with site.db() as conn:
            titles = {r["title"] for r in await conn.fetch("SELECT title FROM appointments")}
        assert "Taken" not in titles
        assert {r["status"] for r in await _appointments(site)} == {"scheduled"}
